"""Marshmallow schemas of the registration API; the OpenAPI document is generated from them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates, validates_schema

from services.registration import rules
from services.registration.rules import STAGES, nip_problem, normalise_email, normalise_mobile_number
from shared.http import PageQuerySchema, RequestSchema, one_line


class TokenRequestSchema(RequestSchema):
    email = fields.Str(required=True, validate=validate.Length(min=3, max=254))
    password = fields.Str(required=True, validate=validate.Length(min=1, max=200), load_only=True)


class TokenSchema(Schema):
    access_token = fields.Str(required=True)
    token_type = fields.Str(required=True, metadata={"example": "Bearer"})
    expires_in = fields.Int(required=True, metadata={"description": "seconds until the token expires"})


class JwksSchema(Schema):
    keys = fields.List(fields.Dict(), required=True, metadata={"description": "JSON Web Keys (RFC 7517)"})


def within_programme_years(value: datetime) -> None:
    """Sessions happen between 2000 and 2099: anything else is a typo (and would not survive time zones)."""
    if not 2000 <= value.year <= 2099:
        raise ValidationError("Must be a date between the years 2000 and 2099.")


class ProgrammeCreateSchema(RequestSchema):
    """A programme: its name and year, the agencies (OPD) taking part, and their seat quota per session."""

    name = fields.Str(required=True, validate=[validate.Length(min=3, max=200), one_line])
    year = fields.Int(required=True, strict=True, validate=validate.Range(min=2000, max=2099))
    opds = fields.List(
        fields.Str(validate=[validate.Length(min=2, max=200), one_line]),
        required=True,
        validate=validate.Length(min=1, max=300),
        metadata={"description": "the agencies (OPD) taking part; registrants pick one"},
    )
    opd_quota = fields.Int(
        load_default=None,
        allow_none=True,
        strict=True,
        validate=validate.Range(min=1, max=100_000),
        metadata={"description": "most seats one agency may hold in one session; null = no limit"},
    )


class ProgrammeSchema(Schema):
    id = fields.Str(required=True)
    name = fields.Str(required=True)
    year = fields.Int(required=True)
    opds = fields.List(fields.Str(), required=True)
    opd_quota = fields.Int(allow_none=True, required=True)
    stages = fields.List(fields.Str(validate=validate.OneOf(STAGES)), required=True)
    created_at = fields.AwareDateTime(required=True)


def _when(description: str, **kwargs) -> fields.AwareDateTime:
    return fields.AwareDateTime(
        validate=within_programme_years,
        metadata={"description": description, "example": "2026-12-07T09:00:00+08:00"},
        **kwargs,
    )


_https_url = validate.URL(schemes={"http", "https"}, require_tld=False)


def flattened(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested errors (``{"questions": {1: {"kind": [...]}}}``) by dotted field name
    (``questions.1.kind``), the shape of the problem's ``errors`` (and of a page's inline errors)."""
    if not isinstance(messages, dict):
        return {prefix or "_schema": [str(m) for m in (messages if isinstance(messages, list) else [messages])]}
    flat: dict[str, list[str]] = {}
    for name, inner in messages.items():
        flat.update(flattened(inner, f"{prefix}.{name}" if prefix else str(name)))
    return flat


class QuestionSchema(RequestSchema):
    """One extra question the organiser asks registrants of a session."""

    key = fields.Str(
        required=True,
        validate=validate.Regexp(
            rules.QUESTION_KEY.pattern + r"\Z",
            error="Must be a short name of lower-case letters, digits, - or _, starting with a letter (at most 40).",
        ),
        metadata={
            "description": "names the answer in `answers`, in the CSV export and as an import column",
            "example": "ukuran-kaos",
        },
    )
    label = fields.Str(
        required=True,
        validate=[validate.Length(min=2, max=300), one_line],
        metadata={"description": "the question as registrants read it", "example": "Ukuran kaos"},
    )
    kind = fields.Str(required=True, validate=validate.OneOf(rules.QUESTION_KINDS))
    required = fields.Bool(load_default=False)
    choices = fields.List(
        fields.Str(validate=[validate.Length(min=1, max=200), one_line]),
        validate=validate.Length(min=2, max=rules.MAX_CHOICES),
        metadata={"description": "`choice` questions only: what registrants choose from", "example": ["S", "M", "L"]},
    )
    max_length = fields.Int(
        strict=True,
        validate=validate.Range(min=1, max=rules.LONGEST_TEXT_LENGTH),
        metadata={"description": f"`text` questions only: the longest answer (default {rules.DEFAULT_TEXT_LENGTH})"},
    )

    @validates("key")
    def _key_not_reserved(self, value: str, **_kwargs) -> None:
        if value in rules.RESERVED_QUESTION_KEYS:
            raise ValidationError("Is a registration field's name; choose another key.")

    @validates_schema
    def _fields_of_the_kind(self, data: dict, **_kwargs) -> None:
        if data["kind"] == "choice" and "choices" not in data:
            raise ValidationError({"choices": ["A choice question needs its choices."]})
        if data["kind"] != "choice" and "choices" in data:
            raise ValidationError({"choices": ["Only a choice question has choices."]})
        if data["kind"] == "choice" and len(set(data["choices"])) != len(data["choices"]):
            raise ValidationError({"choices": ["Each choice must be different."]})
        if data["kind"] != "text" and "max_length" in data:
            raise ValidationError({"max_length": ["Only a text question has a maximum length."]})

    @post_load
    def _stored(self, data: dict, **_kwargs) -> dict:
        """The definition as stored (``rules.Question``): only the fields of its kind."""
        question = {name: data[name] for name in ("key", "label", "kind", "required")}
        if data["kind"] == "choice":
            question["choices"] = data["choices"]
        if data["kind"] == "text":
            question["max_length"] = data.get("max_length", rules.DEFAULT_TEXT_LENGTH)
        return question


def _questions_field(**kwargs) -> fields.List:
    return fields.List(
        fields.Nested(QuestionSchema),
        validate=validate.Length(max=rules.MAX_QUESTIONS),
        metadata={
            "description": f"extra questions registrants answer (at most {rules.MAX_QUESTIONS}, keys unique); "
            "once people have registered, only relabelling, reordering, new optional questions, new choices, "
            "a required question made optional and a longer text limit are accepted (else 409, naming why)"
        },
        **kwargs,
    )


class QuestionsMixin:
    """Refuses two questions with one key, and reports errors inside a question as ``questions.<i>.<field>``."""

    @validates_schema
    def _unique_keys(self, data: dict, **_kwargs) -> None:
        problems = rules.question_definition_problems(data.get("questions") or [])
        if problems:
            raise ValidationError({"questions": problems})

    def handle_error(self, error: ValidationError, data: Any, **kwargs) -> None:
        raise ValidationError(flattened(error.messages), data=error.data, valid_data=error.valid_data)


class SessionCreateSchema(QuestionsMixin, RequestSchema):
    """A new session. The foundation's five fields alone make a published session with a waiting list."""

    title = fields.Str(required=True, validate=[validate.Length(min=3, max=200), one_line])
    starts_at = _when("start, with its offset (WITA is +08:00)", required=True)
    ends_at = _when("end, with its offset", required=True)
    location = fields.Str(required=True, validate=[validate.Length(min=2, max=300), one_line])
    capacity = fields.Int(required=True, strict=True, validate=validate.Range(min=1, max=100_000))
    programme_id = fields.Str(load_default=None, allow_none=True, validate=validate.Length(min=1, max=36))
    stage = fields.Str(load_default=None, allow_none=True, validate=validate.OneOf(STAGES))
    description = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=5000))
    online_url = fields.Str(
        load_default=None, allow_none=True, validate=[validate.Length(max=500), _https_url, one_line]
    )
    waitlist = fields.Bool(load_default=True, metadata={"description": "keep a waiting list when full"})
    registration_opens_at = _when("registration opens (null: at once)", load_default=None, allow_none=True)
    registration_closes_at = _when("registration closes (null: at the start)", load_default=None, allow_none=True)
    state = fields.Str(load_default="published", validate=validate.OneOf(["draft", "published"]))
    record = fields.Bool(
        load_default=False,
        metadata={"description": "a record of a session that already happened (its start may be past)"},
    )
    questions = _questions_field(load_default=list)


class SessionChangeSchema(QuestionsMixin, RequestSchema):
    """What an organiser changes in a session; fields left out stay as they are."""

    title = fields.Str(validate=[validate.Length(min=3, max=200), one_line])
    starts_at = _when("start, with its offset")
    ends_at = _when("end, with its offset")
    location = fields.Str(validate=[validate.Length(min=2, max=300), one_line])
    capacity = fields.Int(strict=True, validate=validate.Range(min=1, max=100_000))
    stage = fields.Str(allow_none=True, validate=validate.OneOf(STAGES))
    description = fields.Str(allow_none=True, validate=validate.Length(max=5000))
    online_url = fields.Str(allow_none=True, validate=[validate.Length(max=500), _https_url, one_line])
    waitlist = fields.Bool()
    registration_opens_at = _when("registration opens (null: at once)", allow_none=True)
    registration_closes_at = _when("registration closes (null: at the start)", allow_none=True)
    questions = _questions_field()


class QuestionAnswerSchema(Schema):
    """A question as the session's answer shows it."""

    key = fields.Str(required=True)
    label = fields.Str(required=True)
    kind = fields.Str(required=True, validate=validate.OneOf(rules.QUESTION_KINDS))
    required = fields.Bool(required=True)
    choices = fields.List(fields.Str(), metadata={"description": "`choice` questions only"})
    max_length = fields.Int(metadata={"description": "`text` questions only"})


class SessionSchema(Schema):
    """A session as the API answers it; times in the programme's time zone (WITA, +08:00)."""

    id = fields.Str(required=True)
    title = fields.Str(required=True)
    starts_at = fields.AwareDateTime(required=True)
    ends_at = fields.AwareDateTime(required=True)
    location = fields.Str(required=True)
    capacity = fields.Int(required=True)
    programme_id = fields.Str(allow_none=True, required=True)
    stage = fields.Str(allow_none=True, required=True)
    description = fields.Str(allow_none=True, required=True)
    online_url = fields.Str(allow_none=True, required=True)
    waitlist = fields.Bool(required=True)
    registration_opens_at = fields.AwareDateTime(allow_none=True, required=True)
    registration_closes_at = fields.AwareDateTime(allow_none=True, required=True)
    state = fields.Str(required=True, validate=validate.OneOf(["draft", "published", "cancelled"]))
    record = fields.Bool(required=True)
    seats_available = fields.Int(required=True)
    confirmed_count = fields.Int(required=True)
    waitlisted_count = fields.Int(required=True)
    questions = fields.List(
        fields.Nested(QuestionAnswerSchema), required=True, metadata={"description": "the extra questions to answer"}
    )


class SessionQuerySchema(PageQuerySchema):
    """Filters of the session list. Without an organiser's token only published sessions are listed."""

    programme_id = fields.Str(validate=validate.Length(min=1, max=36))
    stage = fields.Str(validate=validate.OneOf(STAGES))
    state = fields.Str(
        validate=validate.OneOf(["draft", "published", "cancelled"]),
        metadata={"description": "organisers only, except `published` (the default)"},
    )
    starts_from = fields.AwareDateTime(validate=within_programme_years, metadata={"description": "start ≥ this"})
    starts_before = fields.AwareDateTime(validate=within_programme_years, metadata={"description": "start < this"})


class ParticipantSchema(RequestSchema):
    """Who registers: a civil servant (ASN) of an agency (OPD).

    ``job_title`` is the participant's position (jabatan). Clients written for the first version sent it as
    ``position``; a *string* ``position`` is still read as the job title (when ``job_title`` is absent), since
    ``position`` now names the place on the waiting list in every answer.
    """

    name = fields.Str(required=True, validate=[validate.Length(min=2, max=200), one_line])
    nip = fields.Str(required=True, metadata={"description": "NIP, 18 digits 0-9", "example": "198503152010011001"})
    email = fields.Str(required=True, metadata={"example": "sari@kaltaraprov.go.id"})
    phone = fields.Str(required=True, metadata={"example": "0812 3456 7890"})
    opd = fields.Str(
        required=True,
        validate=[validate.Length(min=2, max=200), one_line],
        metadata={"description": "agency; one of the programme's when the session has a programme"},
    )
    job_title = fields.Str(load_default=None, allow_none=True, validate=[validate.Length(max=200), one_line])
    position = fields.Raw(
        load_only=True,
        load_default=None,
        allow_none=True,
        metadata={"description": "deprecated: the job title, for older clients (read only if it is a string)"},
    )
    language = fields.Str(
        load_default="id",
        validate=validate.OneOf(["id", "en"]),
        metadata={"description": "the language every later message uses"},
    )
    answers = fields.Dict(
        keys=fields.Str(),
        values=fields.Raw(),
        load_default=dict,
        validate=validate.Length(max=rules.MAX_QUESTIONS, error="Answers at most {max} questions."),
        metadata={
            "description": "answers to the session's questions by key: text (lines allowed, up to the question's "
            "`max_length`), one of a `choice` question's choices, `true`/`false` for `yes-no`; every `required` "
            "question answered, no other key. A refusal names `answers.<key>`",
            "example": {"ukuran-kaos": "M", "membawa-laptop": True},
        },
    )

    @validates("nip")
    def _nip(self, value: str, **_kwargs) -> None:
        problem = nip_problem(value)
        if problem:
            raise ValidationError(problem)

    @validates("email")
    def _email(self, value: str, **_kwargs) -> None:
        _reason_as_validation_error(normalise_email, value)

    @validates("phone")
    def _phone(self, value: str, **_kwargs) -> None:
        _reason_as_validation_error(normalise_mobile_number, value)

    @validates_schema(skip_on_field_errors=False)
    def _answers_shape(self, data: dict, **_kwargs) -> None:
        """Only the answers' shape, naming ``answers.<key>``: whether they fit the session's questions is the
        domain's to check (``rules.check_answers``), against the definitions its locking statement reads."""
        wrong: dict[str, list[str]] = {}
        for key, answer in (data.get("answers") or {}).items():
            if len(key) > 40:  # no question has such a key (and the name would not fit a problem's errors)
                wrong[f"answers.{key[:40]}…"] = [rules.ANSWER_UNKNOWN]
            elif not isinstance(answer, bool | str):
                wrong[f"answers.{key}"] = ["Must be text or true/false."]
            elif isinstance(answer, str) and len(answer) > rules.LONGEST_TEXT_LENGTH:
                wrong[f"answers.{key}"] = [f"Longer than maximum length {rules.LONGEST_TEXT_LENGTH}."]
        if wrong:
            raise ValidationError(wrong)

    @validates("position")
    def _position(self, value, **_kwargs) -> None:
        if isinstance(value, str):
            for rule in (validate.Length(max=200), one_line):
                rule(value)

    @post_load
    def _normalise(self, data: dict, **_kwargs) -> dict:
        old_job_title = data.pop("position", None)
        if data.get("job_title") is None and isinstance(old_job_title, str):
            data["job_title"] = old_job_title
        return {**data, "email": normalise_email(data["email"]), "phone": normalise_mobile_number(data["phone"])}


def _reason_as_validation_error(normalise, value: str) -> None:
    try:
        normalise(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class RegistrationSchema(Schema):
    """A registration as the API answers it. A participant whose registration is cancelled sees only
    ``id``, ``session_id``, ``status`` and ``cancelled_at``."""

    id = fields.Str(required=True)
    session_id = fields.Str(required=True)
    status = fields.Str(required=True, validate=validate.OneOf(["confirmed", "waitlisted", "cancelled"]))
    position = fields.Int(
        allow_none=True, metadata={"description": "place on the waiting list, 1 = next; null unless waitlisted"}
    )
    name = fields.Str()
    nip = fields.Str()
    email = fields.Str()
    phone = fields.Str()
    opd = fields.Str()
    job_title = fields.Str(allow_none=True)
    language = fields.Str(validate=validate.OneOf(["id", "en"]))
    created_at = fields.AwareDateTime()
    cancelled_at = fields.AwareDateTime(allow_none=True)
    ticket_code = fields.Str(
        allow_none=True,
        metadata={
            "description": "the signed check-in code of the ticket while confirmed (the QR code holds it); "
            "null while waiting, absent once cancelled",
            "example": "ABCD-EFGH-JKLM-NPQR",
        },
    )
    checked_in_at = fields.AwareDateTime(allow_none=True, metadata={"description": "when the ticket was checked in"})
    answers = fields.Dict(
        keys=fields.Str(),
        values=fields.Raw(),
        metadata={"description": "answers to the session's questions by key (organisers and the participant only)"},
    )


class RegistrationCreatedSchema(RegistrationSchema):
    manage_token = fields.Str(
        required=True, metadata={"description": "the participant's bearer token for this registration"}
    )
    manage_url = fields.Str(required=True, metadata={"description": "the participant's page, opened with the token"})


class RegistrationQuerySchema(PageQuerySchema):
    status = fields.Str(validate=validate.OneOf(["confirmed", "waitlisted", "cancelled"]))
    opd = fields.Str(validate=validate.Length(min=1, max=200))
    q = fields.Str(validate=validate.Length(min=1, max=200), metadata={"description": "search name, NIP, e-mail"})


class MoveSchema(RequestSchema):
    session_id = fields.Str(required=True, validate=validate.Length(min=1, max=36))


class StatusCountsSchema(Schema):
    confirmed = fields.Int(required=True)
    waitlisted = fields.Int(required=True)
    cancelled = fields.Int(required=True)


class OpdCountsSchema(StatusCountsSchema):
    opd = fields.Str(required=True)


class RegistrationCountsSchema(Schema):
    by_status = fields.Nested(StatusCountsSchema, required=True)
    by_opd = fields.List(fields.Nested(OpdCountsSchema), required=True)


class CheckInRequestSchema(RequestSchema):
    code = fields.Str(
        required=True,
        validate=[validate.Length(min=1, max=64), one_line],
        metadata={"description": "the ticket's code, as scanned or typed (case, spaces and dashes do not matter)"},
    )


class CheckInSchema(Schema):
    """One participant checked in at a session."""

    registration_id = fields.Str(required=True)
    session_id = fields.Str(required=True)
    name = fields.Str(required=True)
    nip = fields.Str(required=True)
    email = fields.Str(required=True)
    opd = fields.Str(required=True)
    job_title = fields.Str(allow_none=True)
    checked_in_at = fields.AwareDateTime(required=True)
    checked_in_by = fields.Str(required=True, metadata={"description": "the organiser's account id"})
    checked_in_by_name = fields.Str(allow_none=True)


class ImportProblemSchema(Schema):
    field = fields.Str(allow_none=True, required=True, metadata={"description": "the column, or null for the row"})
    reason = fields.Str(required=True)


class ImportLineSchema(Schema):
    line = fields.Int(required=True, metadata={"description": "line in the file; the header is line 1"})
    name = fields.Str(allow_none=True)
    nip = fields.Str(allow_none=True)
    outcome = fields.Str(
        required=True,
        validate=validate.OneOf(["pending", "confirmed", "waitlisted", "duplicate", "invalid", "refused"]),
        metadata={"description": "`duplicate`: already registered for the session (nothing was changed)"},
    )
    problems = fields.List(fields.Nested(ImportProblemSchema), allow_none=True)
    registration_id = fields.Str(allow_none=True)


class ImportSchema(Schema):
    """A bulk import and its progress: `done` of `total` lines, and the lines needing attention."""

    id = fields.Str(required=True)
    session_id = fields.Str(required=True)
    filename = fields.Str(allow_none=True)
    state = fields.Str(required=True, validate=validate.OneOf(["queued", "running", "finished"]))
    total = fields.Int(required=True)
    done = fields.Int(required=True)
    progress = fields.Float(required=True, metadata={"description": "done / total, 0.0 to 1.0"})
    confirmed = fields.Int(required=True)
    waitlisted = fields.Int(required=True)
    duplicates = fields.Int(required=True)
    invalid = fields.Int(required=True)
    refused = fields.Int(required=True)
    failed = fields.Int(required=True, metadata={"description": "invalid + refused lines"})
    created_at = fields.AwareDateTime(required=True)
    finished_at = fields.AwareDateTime(allow_none=True)
    lines = fields.List(
        fields.Nested(ImportLineSchema),
        required=True,
        metadata={"description": "the lines asked for (`lines=problems`, the default, or `all`), in file order"},
    )


class ImportQuerySchema(PageQuerySchema):
    lines = fields.Str(
        load_default="problems",
        validate=validate.OneOf(["problems", "all"]),
        metadata={"description": "`problems`: invalid, refused and duplicate lines; `all`: every line"},
    )
