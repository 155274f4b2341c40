"""The event catalogue: the CloudEvents 1.0 envelope and one versioned schema per event type.

This module is the single home of what every event looks like. Publishing validates ``data`` against the
schema of its type (a bug in a producer fails loudly, inside the producer's transaction, so nothing is
written); consuming validates the whole envelope again (a message that does not fit is dead-lettered, never
half-handled). A schema change that breaks consumers gets a new ``dataversion`` rather than an edit.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

SPECVERSION = "1.0"
DATACONTENTTYPE = "application/json"


class InvalidEvent(ValueError):
    """A message that is not a well-formed event of a known type and version."""


# --- data schemas, one per event type and version -------------------------------------------------------


class SessionDataV1(Schema):
    """A lab session as registrants and the other services need it (``session.created``, ``.published``,
    ``.cancelled``). ``stage``, ``online_url`` and ``state`` were added later; they are optional."""

    session_id = fields.Str(required=True)
    programme_id = fields.Str(allow_none=True, load_default=None)
    title = fields.Str(required=True)
    starts_at = fields.AwareDateTime(required=True)
    ends_at = fields.AwareDateTime(required=True)
    location = fields.Str(required=True)
    capacity = fields.Int(required=True, validate=validate.Range(min=1))
    stage = fields.Str(allow_none=True, load_default=None)
    online_url = fields.Str(allow_none=True, load_default=None)
    state = fields.Str(load_default="published", validate=validate.OneOf(["draft", "published", "cancelled"]))


class ChangeSchema(Schema):
    old = fields.Raw(allow_none=True, required=True)
    new = fields.Raw(allow_none=True, required=True)


class SessionChangedDataV1(SessionDataV1):
    """``session.changed``: the session as it is now, and what changed in its time or place."""

    changes = fields.Dict(
        keys=fields.Str(validate=validate.OneOf(["starts_at", "ends_at", "location", "online_url"])),
        values=fields.Nested(ChangeSchema),
        required=True,
        validate=validate.Length(min=1),
    )


class RegistrationDataV1(Schema):
    """A participant's registration for a session: who, for what, and where they stand.

    The one shape of ``registration.confirmed``, ``.waitlisted``, ``.promoted`` and ``.cancelled``.
    ``position`` is the participant's job title (jabatan), as it always was in this version; the same value
    is also in ``job_title`` (added later, the name to read from now on), and the place on the waiting list
    is ``waitlist_position`` (1 = next, ``null`` unless waitlisted). Keeping ``position``'s meaning is what
    keeps version 1 compatible for the consumers that store it as the job title; a version 2 may drop it.
    """

    registration_id = fields.Str(required=True)
    session_id = fields.Str(required=True)
    programme_id = fields.Str(allow_none=True, load_default=None)
    session_title = fields.Str(required=True)
    session_starts_at = fields.AwareDateTime(required=True)
    session_location = fields.Str(required=True)
    status = fields.Str(required=True, validate=validate.OneOf(["confirmed", "waitlisted", "cancelled"]))
    name = fields.Str(required=True)
    # ASCII digits only (not \d, which matches every script's digits), and no trailing newline (not $)
    nip = fields.Str(required=True, validate=validate.Regexp(r"\A[0-9]{18}\Z"))
    email = fields.Email(required=True)
    phone = fields.Str(required=True)
    opd = fields.Str(required=True)
    position = fields.Str(allow_none=True, load_default=None, metadata={"description": "job title (deprecated)"})
    job_title = fields.Str(allow_none=True, load_default=None)
    waitlist_position = fields.Int(allow_none=True, load_default=None, validate=validate.Range(min=1))
    language = fields.Str(load_default="id", validate=validate.OneOf(["id", "en"]))
    # added later, optional: what the participant's mail shows (the manage link with its participant token,
    # the ticket's check-in code as a QR code) and attaches (the session's calendar entry). Registration fills
    # them for .confirmed (both), .waitlisted (the link only), .promoted (both) and a moved registration's new
    # event; .cancelled carries neither (that link would be refused, and no ticket is left)
    manage_url = fields.Str(
        allow_none=True,
        load_default=None,
        metadata={
            "description": "the participant's link: the manage page with their participant token — the same "
            "link the registration's 201 answer gave; null for a cancellation"
        },
    )
    ticket_code = fields.Str(
        allow_none=True,
        load_default=None,
        metadata={"description": "the ticket's signed check-in code while the registration holds a seat, else null"},
    )
    session_ends_at = fields.AwareDateTime(allow_none=True, load_default=None)
    online_url = fields.Str(allow_none=True, load_default=None)


class CheckInDataV1(Schema):
    """``participant.checked_in``: who came to which session, when, and which organiser let them in."""

    registration_id = fields.Str(required=True)
    session_id = fields.Str(required=True)
    programme_id = fields.Str(allow_none=True, load_default=None)
    name = fields.Str(required=True)
    nip = fields.Str(required=True, validate=validate.Regexp(r"\A[0-9]{18}\Z"))
    email = fields.Email(required=True)
    opd = fields.Str(required=True)
    checked_in_at = fields.AwareDateTime(required=True)
    checked_in_by = fields.Str(required=True, metadata={"description": "the organiser's account id"})


class NotificationDataV1(Schema):
    delivery_id = fields.Str(required=True)
    channel = fields.Str(required=True)
    recipient = fields.Str(required=True)
    template = fields.Str(required=True)
    caused_by = fields.Str(allow_none=True, load_default=None)
    error = fields.Str(allow_none=True, load_default=None)


# --- the evaluation service's events, and the accounts it learns evaluators from ---------------------------


class AccountDataV1(Schema):
    """``account.created`` / ``account.changed``: an organiser or evaluator account as it is now (registration
    owns the accounts; evaluation keeps its evaluators from these). ``opd`` is the agency an evaluator works
    for — who may not evaluate that agency's proposals; ``active`` false takes an evaluator out of new work."""

    account_id = fields.Str(required=True)
    email = fields.Email(required=True)
    name = fields.Str(allow_none=True, load_default=None)
    role = fields.Str(required=True, validate=validate.OneOf(["organiser", "evaluator"]))
    opd = fields.Str(allow_none=True, load_default=None)
    active = fields.Bool(load_default=True)


class ProposalSubmittedDataV1(Schema):
    """``proposal.submitted``: an OPD team's proposal was frozen for evaluation (who sent it, no content)."""

    proposal_id = fields.Str(required=True)
    programme_id = fields.Str(allow_none=True, load_default=None)
    registration_id = fields.Str(required=True, metadata={"description": "the team lead's registration"})
    opd = fields.Str(required=True)
    title = fields.Str(required=True)
    category = fields.Str(required=True)
    team_name = fields.Str(required=True, metadata={"description": "the team lead's name"})
    team_email = fields.Email(required=True)
    language = fields.Str(load_default="id", validate=validate.OneOf(["id", "en"]))
    submitted_at = fields.AwareDateTime(required=True)


class EvaluationAssignedDataV1(Schema):
    """``evaluation.assigned``: an evaluator has a proposal to evaluate in a round."""

    assignment_id = fields.Str(required=True)
    round_id = fields.Str(required=True)
    round_name = fields.Str(required=True)
    proposal_id = fields.Str(required=True)
    proposal_title = fields.Str(required=True)
    evaluator_id = fields.Str(required=True)
    evaluator_email = fields.Email(required=True)
    evaluator_name = fields.Str(allow_none=True, load_default=None)
    assigned_at = fields.AwareDateTime(required=True)


class EvaluationSubmittedDataV1(Schema):
    """``evaluation.submitted``: an evaluator stored (``revision`` 1) or revised an evaluation.

    Deliberately without scores, totals or comments: the event goes to other services (notification confirms
    receipt to the evaluator) while the round is open, and no score may leave the evaluation service before
    the round closes."""

    assignment_id = fields.Str(required=True)
    round_id = fields.Str(required=True)
    proposal_id = fields.Str(required=True)
    evaluator_id = fields.Str(required=True)
    evaluator_email = fields.Email(required=True)
    revision = fields.Int(required=True, validate=validate.Range(min=1))
    submitted_at = fields.AwareDateTime(required=True)


class ResultsPublishedDataV1(Schema):
    """``results.published``: one team's result of a round (one event per proposal, so each team is told
    once). ``final`` is false for the provisional list an objection window (masa sanggah) follows, until
    ``objection_deadline``; then the final list is published again with ``final`` true."""

    round_id = fields.Str(required=True)
    round_name = fields.Str(required=True)
    programme_id = fields.Str(allow_none=True, load_default=None)
    proposal_id = fields.Str(required=True)
    proposal_title = fields.Str(required=True)
    registration_id = fields.Str(required=True)
    team_name = fields.Str(required=True)
    team_email = fields.Email(required=True)
    opd = fields.Str(required=True)
    language = fields.Str(load_default="id", validate=validate.OneOf(["id", "en"]))
    rank = fields.Int(allow_none=True, load_default=None, validate=validate.Range(min=1))
    ranked_proposals = fields.Int(required=True, validate=validate.Range(min=0))
    advanced = fields.Bool(allow_none=True, load_default=None)
    reason = fields.Str(allow_none=True, load_default=None, metadata={"description": "why it did not advance"})
    final = fields.Bool(required=True)
    objection_deadline = fields.AwareDateTime(allow_none=True, load_default=None)


class ObjectionAnsweredDataV1(Schema):
    """``objection.answered``: the organisers' answer to a team's objection (sanggahan) to a round's provisional
    result — ``upheld`` (the decision may change; the final list tells it) or ``rejected`` — with their reason,
    told to the team that filed it."""

    objection_id = fields.Str(required=True)
    round_id = fields.Str(required=True)
    round_name = fields.Str(required=True)
    programme_id = fields.Str(allow_none=True, load_default=None)
    proposal_id = fields.Str(required=True)
    proposal_title = fields.Str(required=True)
    registration_id = fields.Str(required=True)
    team_name = fields.Str(required=True)
    team_email = fields.Email(required=True)
    language = fields.Str(load_default="id", validate=validate.OneOf(["id", "en"]))
    decision = fields.Str(required=True, validate=validate.OneOf(["upheld", "rejected"]))
    answer = fields.Str(required=True, metadata={"description": "the organisers' reason"})
    filed_at = fields.AwareDateTime(required=True)
    answered_at = fields.AwareDateTime(required=True)


@dataclass(frozen=True)
class EventType:
    name: str
    version: str
    schema: type[Schema]
    description: str


CATALOGUE: dict[str, EventType] = {
    e.name: e
    for e in [
        EventType("session.created", "1", SessionDataV1, "An organiser opened a new lab session."),
        EventType("registration.confirmed", "1", RegistrationDataV1, "A participant holds a seat."),
        EventType("session.published", "1", SessionDataV1, "A draft session was published: it takes registrations."),
        EventType("session.changed", "1", SessionChangedDataV1, "A session's time or place changed (old and new)."),
        EventType("session.cancelled", "1", SessionDataV1, "An organiser cancelled a session."),
        EventType("registration.waitlisted", "1", RegistrationDataV1, "The session was full: on the waiting list."),
        EventType(
            "registration.promoted",
            "1",
            RegistrationDataV1,
            "A seat came free: moved from the waiting list to confirmed.",
        ),
        EventType("registration.cancelled", "1", RegistrationDataV1, "The participant or an organiser cancelled it."),
        EventType(
            "participant.checked_in", "1", CheckInDataV1, "A participant's ticket was checked in at the session."
        ),
        EventType("notification.delivered", "1", NotificationDataV1, "A message reached the mail server."),
        EventType("notification.failed", "1", NotificationDataV1, "A message could not be delivered."),
        EventType("account.created", "1", AccountDataV1, "An organiser or evaluator account was created."),
        EventType("account.changed", "1", AccountDataV1, "An account's name, e-mail, role, agency or state changed."),
        EventType("proposal.submitted", "1", ProposalSubmittedDataV1, "A team submitted a proposal (frozen)."),
        EventType("evaluation.assigned", "1", EvaluationAssignedDataV1, "An evaluator was given a proposal."),
        EventType(
            "evaluation.submitted", "1", EvaluationSubmittedDataV1, "An evaluation was stored or revised (no scores)."
        ),
        EventType("results.published", "1", ResultsPublishedDataV1, "A round's result for one team was published."),
        EventType("objection.answered", "1", ObjectionAnsweredDataV1, "The organisers answered a team's objection."),
    ]
}


class EnvelopeSchema(Schema):
    """CloudEvents 1.0, structured JSON mode, with Labinov's two extension attributes."""

    specversion = fields.Str(required=True, validate=validate.Equal(SPECVERSION))
    id = fields.UUID(required=True)
    source = fields.Str(required=True, validate=validate.Regexp(r"^/[a-z-]+$"))
    type = fields.Str(required=True, validate=validate.OneOf(sorted(CATALOGUE)))
    time = fields.AwareDateTime(required=True)
    subject = fields.Str(allow_none=True, load_default=None)
    datacontenttype = fields.Str(load_default=DATACONTENTTYPE, validate=validate.Equal(DATACONTENTTYPE))
    dataversion = fields.Str(required=True)
    correlationid = fields.Str(required=True, validate=validate.Length(min=1, max=200))
    data = fields.Dict(required=True)


#: One instance of each schema, made once: building a marshmallow schema costs more than using it, and
#: ``load``/``dump``/``validate`` keep no state on the instance, so every thread may share them.
_ENVELOPE = EnvelopeSchema()


@cache
def _data_schema(event_type: EventType) -> Schema:
    return event_type.schema()


@dataclass(frozen=True)
class Event:
    """A validated event as consumers see it: envelope attributes plus loaded ``data``."""

    id: str
    type: str
    source: str
    time: datetime
    subject: str | None
    dataversion: str
    correlationid: str
    data: dict[str, Any]


def make_event(
    type: str, data: dict[str, Any], *, source: str, correlation_id: str, subject: str | None = None
) -> dict[str, Any]:
    """Build the JSON envelope of a new event, validating ``data`` against the catalogue."""
    event_type = CATALOGUE.get(type)
    if event_type is None:
        raise InvalidEvent(f"unknown event type {type!r}; add it to shared/events.py")
    schema = _data_schema(event_type)
    as_json = json.loads(json.dumps(data, default=_json_default))
    try:
        loaded = schema.load(as_json)
    except ValidationError as exc:
        raise InvalidEvent(f"{type} v{event_type.version} data does not fit its schema: {exc.messages}") from None
    envelope = {
        "specversion": SPECVERSION,
        "id": str(uuid.uuid4()),
        "source": source,
        "type": type,
        "time": datetime.now(UTC).isoformat(),
        "subject": subject,
        "datacontenttype": DATACONTENTTYPE,
        "dataversion": event_type.version,
        "correlationid": correlation_id,
        "data": schema.dump(loaded),
    }
    errors = _ENVELOPE.validate(envelope)
    if errors:  # a producer's mistake (say, an empty correlation id) must not reach consumers
        raise InvalidEvent(f"{type} envelope: {errors}")
    return envelope


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{value!r} is not JSON serialisable")


def parse_event(body: Any) -> Event:
    """Validate a received envelope and its ``data``; raise :class:`InvalidEvent` if anything is off."""
    if not isinstance(body, dict):
        raise InvalidEvent(f"an event is a JSON object, got {type(body).__name__}")
    try:
        envelope = _ENVELOPE.load(body, unknown="exclude")
    except ValidationError as exc:
        raise InvalidEvent(f"envelope: {exc.messages}") from None
    event_type = CATALOGUE[envelope["type"]]
    if envelope["dataversion"] != event_type.version:
        raise InvalidEvent(f"{event_type.name} dataversion {envelope['dataversion']!r} is not supported")
    try:
        data = _data_schema(event_type).load(envelope["data"], unknown="exclude")
    except ValidationError as exc:
        raise InvalidEvent(f"{event_type.name} data: {exc.messages}") from None
    return Event(
        id=str(envelope["id"]),
        type=envelope["type"],
        source=envelope["source"],
        time=envelope["time"],
        subject=envelope["subject"],
        dataversion=envelope["dataversion"],
        correlationid=envelope["correlationid"],
        data=data,
    )
