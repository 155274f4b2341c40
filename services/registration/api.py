"""The registration JSON API (``/registration/api/v1``): thin adapters over ``domain``.

Who commits: each view opens its unit of work and commits it once the domain operation has added to it
(the domain never commits); sign-in hands the domain the unit-of-work factory, because it commits the
counted attempt before checking the password.

Who may call what (``@public`` / ``@requires`` on each view; what a participant's token opens is decided
in ``rules.registration_access``):

- anyone: ``POST /auth/token``, ``GET /auth/jwks.json``, ``GET /programmes``, ``GET /programmes/{id}``,
  ``GET /sessions`` and ``GET /sessions/{id}`` (published and cancelled sessions; with an organiser's token
  drafts too), ``POST /sessions/{id}/registrations``;
- organisers: ``POST /programmes``; ``POST /sessions``, ``PATCH /sessions/{id}``, ``POST /sessions/{id}/publish``,
  ``POST /sessions/{id}/cancel``; ``GET /sessions/{id}/registrations`` (+ ``/counts``, ``.csv``);
  ``POST /registrations/{id}/move``; ``POST /sessions/{id}/check-ins`` and ``GET /sessions/{id}/check-ins``
  (+ ``.csv``); ``POST /sessions/{id}/imports`` and ``GET /sessions/{id}/imports/{import id}``;
- organisers, or the participant with their registration's token: ``GET /registrations/{id}`` and
  ``POST /registrations/{id}/cancel``. A participant token opens only its own registration: another
  registration's id is **403** — refused before any lookup, so it answers alike whether that registration
  exists or not (ids are random UUIDs, and a 403 tells an honest participant "this link is for another
  registration" rather than pretending it vanished). A cancelled registration's token still reads that it
  is cancelled (``id``, ``session_id``, ``status``, ``cancelled_at`` only) and opens nothing else (403).

The participant's link (``manage_url`` in the 201 answer of a registration, and in the registration's event, so
its mail carries the same link — ``domain.ParticipantLinks``), which the pages serve:
``<LABINOV_PUBLIC_URL>/registration/manage/<registration id>?token=<participant token>``
(``domain.MANAGE_PATH``). The page reads the token from the query string and calls the two endpoints above
with it as ``Authorization: Bearer``.

Tickets: a confirmed registration's read carries ``ticket_code``, the signed check-in code its QR code holds
(``rules.ticket_code``); organisers check it in with ``POST /sessions/{id}/check-ins``. Refusals: a code that
is no signed ticket, or a ticket of another session → 422; a cancelled or waiting registration's ticket, a
cancelled session, or a second check-in of the same ticket → 409; the problem's ``type`` names which
(``invalid-ticket``, ``ticket-for-another-session``, ``ticket-cancelled``, ``ticket-waitlisted``,
``session-cancelled``, ``already-checked-in``).

Bulk imports: ``POST /sessions/{id}/imports`` takes the CSV as the body (``text/csv``) or as the ``file`` of a
``multipart/form-data`` form, up to :data:`IMPORT_MAX_BYTES` (the suite's 64 KiB limit is for JSON; this
route alone raises it, see :func:`accepts_uploads`). Small files are registered during the request, larger
ones by the registration worker (``domain``'s section on bulk imports); the answer and ``GET …/imports/{id}``
give the progress and the lines that need attention.

The session's extra questions: ``questions`` on ``POST``/``PATCH /sessions`` (each ``key``, ``label``, ``kind``
``text``/``choice``/``yes-no``, ``required``, ``choices`` or ``max_length``) and in every session answer, so the
public form can ask them. A registration's ``answers`` (by key) are checked against them (422 naming
``answers.<key>``) and shown only to organisers — in ``GET /sessions/{id}/registrations`` and as one CSV column
per question — and to the participant in their own registration; they are not put in any event (the other
services need none of them, and the answers may be personal). Once people have registered, a ``PATCH`` may
not spoil their answers (409 ``questions-in-use``, see ``rules.question_change_refusal``).

Times in every answer are shown in the programme's time zone (``LABINOV_TIMEZONE``, WITA by default), by
:func:`_shown` — the one place that converts them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import Response, current_app, request
from flask_smorest import Blueprint
from werkzeug.exceptions import RequestEntityTooLarge

from services.registration import domain
from services.registration.rules import STAGES, Access, SeatCount, answer_cell, import_progress
from services.registration.schemas import (
    CheckInRequestSchema,
    CheckInSchema,
    ImportQuerySchema,
    ImportSchema,
    JwksSchema,
    MoveSchema,
    ParticipantSchema,
    ProgrammeCreateSchema,
    ProgrammeSchema,
    RegistrationCountsSchema,
    RegistrationCreatedSchema,
    RegistrationQuerySchema,
    RegistrationSchema,
    SessionChangeSchema,
    SessionCreateSchema,
    SessionQuerySchema,
    SessionSchema,
    TokenRequestSchema,
    TokenSchema,
)
from services.registration.tables import LabSession, Programme, Registration
from shared.auth import AuthError, Principal, current_principal, public, requires
from shared.errors import DomainError
from shared.http import PageQuerySchema, client_address, runtime_of
from shared.idempotency import idempotent
from shared.problems import Problem
from shared.ratelimit import public_write_limit
from shared.spreadsheets import spreadsheet_csv

blp = Blueprint("registration_api", __name__, description="Accounts, programmes, sessions and registrations")


def _shown(value: datetime | None) -> datetime | None:
    """A stored (UTC) time as people read it: in the programme's time zone."""
    return None if value is None else value.astimezone(runtime_of().settings.timezone)


def _session_view(lab_session: LabSession, seats: SeatCount) -> dict[str, Any]:
    plain = ("id", "title", "location", "capacity", "programme_id", "stage", "description", "online_url")
    times = ("starts_at", "ends_at", "registration_opens_at", "registration_closes_at")
    return {
        **{name: getattr(lab_session, name) for name in plain},
        **{name: _shown(getattr(lab_session, name)) for name in times},
        "waitlist": lab_session.waitlist,
        "state": lab_session.state,
        "record": lab_session.record,
        "seats_available": seats.available,
        "confirmed_count": seats.confirmed,
        "waitlisted_count": lab_session.waitlisted_count,
        "questions": lab_session.questions or [],
    }


def _programme_view(programme: Programme) -> dict[str, Any]:
    return {
        "id": programme.id,
        "name": programme.name,
        "year": programme.year,
        "opds": programme.opds,
        "opd_quota": programme.opd_quota,
        "stages": list(STAGES),
        "created_at": _shown(programme.created_at),
    }


def _registration_view(
    registration: Registration, position: int | None, access: Access = Access.FULL, **extra: Any
) -> dict:
    if access is Access.STATUS_ONLY:
        return {
            "id": registration.id,
            "session_id": registration.session_id,
            "status": registration.status,
            "cancelled_at": _shown(registration.cancelled_at),
        }
    return {
        **{
            name: getattr(registration, name)
            for name in ("id", "session_id", "status", "name", "nip", "email", "phone", "opd", "job_title", "language")
        },
        "position": position,
        "created_at": _shown(registration.created_at),
        "cancelled_at": _shown(registration.cancelled_at),
        "answers": registration.answers or {},
        **extra,
    }


def _caller() -> Principal:
    principal = current_principal()
    assert principal is not None  # @requires put it there
    return principal


def _optional_organiser() -> bool:
    """Whether a public view is called with a valid organiser's token (it then shows drafts too)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return current_app.extensions["labinov_verifier"].verify(token.strip()).role == "organiser"


# --- accounts ------------------------------------------------------------------------------------------


@blp.post("/auth/token")
@public
@blp.arguments(TokenRequestSchema)
@blp.response(200, TokenSchema)
@blp.alt_response(401, description="Wrong e-mail or password")
@blp.alt_response(429, description="Too many attempts from this client (for this address); see Retry-After")
def issue_token(credentials):
    """Exchange an organiser's or evaluator's e-mail and password for a bearer token."""
    principal = domain.authenticate(
        runtime_of().unit_of_work, credentials["email"], credentials["password"], client_address()
    )
    issuer = current_app.extensions["labinov_issuer"]
    return {
        "access_token": issuer.issue(principal),
        "token_type": "Bearer",
        "expires_in": issuer.lifetime_seconds,
    }


@blp.get("/auth/jwks.json")
@public
@blp.response(200, JwksSchema)
def jwks():
    """The public key(s) that verify Labinov tokens (JWKS)."""
    return current_app.extensions["labinov_issuer"].jwks()


# --- programmes ----------------------------------------------------------------------------------------


@blp.post("/programmes")
@requires("organiser")
@idempotent
@blp.arguments(ProgrammeCreateSchema)
@blp.response(201, ProgrammeSchema)
def create_programme(fields):
    """Start a programme: its agencies (OPD) and their seat quota per session."""
    with runtime_of().unit_of_work() as uow:
        programme = domain.create_programme(uow, fields, _caller())
        uow.commit()
    return _programme_view(programme)


@blp.get("/programmes")
@public
@blp.arguments(PageQuerySchema, location="query")
@blp.response(200, ProgrammeSchema(many=True))
def list_programmes(page):
    """Programmes, newest year first."""
    with runtime_of().reading() as uow:
        return [_programme_view(p) for p in domain.list_programmes(uow, page["limit"], page["offset"])]


@blp.get("/programmes/<programme_id>")
@public
@blp.response(200, ProgrammeSchema)
@blp.alt_response(404, description="No such programme")
def get_programme(programme_id):
    """One programme with its agencies and stages."""
    with runtime_of().reading() as uow:
        return _programme_view(domain.get_programme(uow, programme_id))


# --- sessions ------------------------------------------------------------------------------------------


@blp.post("/sessions")
@requires("organiser")
@idempotent
@blp.arguments(SessionCreateSchema)
@blp.response(201, SessionSchema)
@blp.alt_response(
    422,
    description="A field breaks a rule (e.g. a start in the past without `record`; a question's field is "
    "named `questions.<index>.<field>`, two questions with one key `questions`)",
)
def create_session(fields):
    """Open a lab session (published at once unless `state` is `draft`)."""
    with runtime_of().unit_of_work() as uow:
        lab_session = domain.create_session(uow, fields, _caller())
        answer = _session_view(lab_session, domain.seat_count(uow, lab_session))
        uow.commit()
    return answer


@blp.get("/sessions")
@public
@blp.arguments(SessionQuerySchema, location="query")
@blp.response(200, SessionSchema(many=True))
@blp.alt_response(403, description="Only organisers may list sessions other than published ones")
def list_sessions(query):
    """Sessions, soonest first, with the seats left; filter by programme, stage, state and start."""
    state = query.get("state", "published")
    if state != "published" and not _optional_organiser():
        raise AuthError(403, "Only organisers (with a token) may list draft or cancelled sessions.")
    with runtime_of().reading() as uow:
        found = domain.list_sessions(
            uow,
            query["limit"],
            query["offset"],
            states=(state,),
            programme_id=query.get("programme_id"),
            stage=query.get("stage"),
            starts_from=query.get("starts_from"),
            starts_before=query.get("starts_before"),
        )
        return [_session_view(*item) for item in found]


@blp.get("/sessions/<session_id>")
@public
@blp.response(200, SessionSchema)
@blp.alt_response(404, description="No such session (a draft is found only with an organiser's token)")
def get_session(session_id):
    """One session with the seats left."""
    with runtime_of().reading() as uow:
        lab_session = domain.get_session(uow, session_id)
        if lab_session.state == "draft" and not _optional_organiser():
            raise domain.NotFound(f"There is no session {session_id}.")
        return _session_view(lab_session, domain.seat_count(uow, lab_session))


@blp.patch("/sessions/<session_id>")
@requires("organiser")
@blp.arguments(SessionChangeSchema)
@blp.response(200, SessionSchema)
@blp.alt_response(404, description="No such session")
@blp.alt_response(
    409,
    description="The session is cancelled; or people have registered and the new `questions` would spoil "
    "their answers (`questions-in-use`: a question removed, made required, added as required, of another "
    "kind, a choice dropped, a shorter limit), the detail naming the question and why",
)
@blp.alt_response(422, description="A field breaks a rule (e.g. capacity below the confirmed seats)")
def change_session(changes, session_id):
    """Change a session; a new time or place is told to registrants (`session.changed`), more seats promote.
    `questions` replaces the whole list of questions."""
    with runtime_of().unit_of_work() as uow:
        lab_session, _promoted = domain.change_session(uow, session_id, changes, links=participant_links())
        answer = _session_view(lab_session, domain.seat_count(uow, lab_session))
        uow.commit()
    return answer


@blp.post("/sessions/<session_id>/publish")
@requires("organiser")
@blp.response(200, SessionSchema)
@blp.alt_response(404, description="No such session")
@blp.alt_response(409, description="The session is not a draft")
def publish_session(session_id):
    """Publish a draft session: it takes registrations (`session.published`)."""
    with runtime_of().unit_of_work() as uow:
        lab_session = domain.publish_session(uow, session_id)
        answer = _session_view(lab_session, domain.seat_count(uow, lab_session))
        uow.commit()
    return answer


@blp.post("/sessions/<session_id>/cancel")
@requires("organiser")
@blp.response(200, SessionSchema)
@blp.alt_response(404, description="No such session")
@blp.alt_response(409, description="The session is already cancelled")
def cancel_session(session_id):
    """Cancel a session (`session.cancelled`): it takes no more registrations."""
    with runtime_of().unit_of_work() as uow:
        lab_session = domain.cancel_session(uow, session_id)
        answer = _session_view(lab_session, domain.seat_count(uow, lab_session))
        uow.commit()
    return answer


# --- registrations -------------------------------------------------------------------------------------


@blp.post("/sessions/<session_id>/registrations")
@public
@public_write_limit
@idempotent
@blp.arguments(ParticipantSchema)
@blp.response(201, RegistrationCreatedSchema)
@blp.alt_response(404, description="No such session")
@blp.alt_response(
    409,
    description="This NIP is already registered for the session; the session is full without a waiting "
    "list; or it takes no registrations now (draft, cancelled, outside its window, started)",
)
@blp.alt_response(
    422,
    description="A field breaks a rule, naming it (e.g. an `opd` not of the programme, or `answers.<key>`: a "
    "required question unanswered, a question the session does not ask, a choice it does not offer)",
)
def register(participant, session_id):
    """Register for a session: `confirmed` while seats remain (also in the agency's quota), else `waitlisted`
    with a `position`; the answer carries the participant's token and link — the same link the confirmation
    (or waiting-list) mail carries."""
    with runtime_of().unit_of_work() as uow:
        registration = domain.register_participant(uow, session_id, participant, links=participant_links())
        uow.commit()  # at once: it releases the session row's lock (see domain's module docstring)
    return {  # the token and link the registration's event carries to the confirmation mail
        **_registration_view(registration, registration.waitlist_position),
        "manage_token": registration.manage_token,
        "manage_url": registration.manage_url,
    }


def participant_links() -> domain.ParticipantLinks:
    """The service's signer, public address and ticket key (made once by ``create_app``)."""
    return current_app.extensions["labinov_participant_links"]


@blp.get("/registrations/<registration_id>")
@requires("organiser", "participant")
@blp.response(200, RegistrationSchema)
@blp.alt_response(403, description="A participant token of another registration")
@blp.alt_response(404, description="No such registration")
def get_registration(registration_id):
    """One registration, with its waiting-list `position`: any for organisers, their own for participants."""
    with runtime_of().reading() as uow:
        registration, access = domain.read_registration(uow, registration_id, _caller())
        if access is not Access.FULL:
            return _registration_view(registration, registration.waitlist_position, access)
        arrived = domain.check_in_of(uow, registration.id)
        return _registration_view(
            registration,
            registration.waitlist_position,
            access,
            ticket_code=domain.ticket_code(_ticket_key(), registration),
            checked_in_at=_shown(arrived.checked_in_at) if arrived else None,
        )


def _ticket_key() -> bytes:
    return participant_links().ticket_key


@blp.post("/registrations/<registration_id>/cancel")
@requires("organiser", "participant")
@public_write_limit
@idempotent
@blp.response(200, RegistrationSchema)
@blp.alt_response(403, description="A participant token of another registration, or of a cancelled one")
@blp.alt_response(404, description="No such registration")
@blp.alt_response(409, description="Already cancelled")
def cancel_registration(registration_id):
    """Cancel a registration; a freed seat goes at once to the first waiting registrant who fits."""
    with runtime_of().unit_of_work() as uow:
        registration, _promoted = domain.cancel_registration(uow, registration_id, _caller(), links=participant_links())
        uow.commit()
    return _registration_view(registration, None)


@blp.post("/registrations/<registration_id>/move")
@requires("organiser")
@blp.arguments(MoveSchema)
@blp.response(200, RegistrationSchema)
@blp.alt_response(404, description="No such registration or session")
@blp.alt_response(409, description="The target session takes no registration, or has this NIP already")
@blp.alt_response(422, description="The registrant's agency is not one of the target programme's")
def move_registration(target, registration_id):
    """Move a registration to another session (same id and link); its old seat goes to the waiting list."""
    with runtime_of().unit_of_work() as uow:
        registration, _promoted = domain.move_registration(
            uow, registration_id, target["session_id"], links=participant_links()
        )
        uow.commit()
    return _registration_view(registration, registration.waitlist_position)


@blp.get("/sessions/<session_id>/registrations")
@requires("organiser")
@blp.arguments(RegistrationQuerySchema, location="query")
@blp.response(200, RegistrationSchema(many=True))
@blp.alt_response(404, description="No such session")
def list_registrations(query, session_id):
    """A session's registrations: confirmed, then the waiting list in order, then cancelled; filter by
    `status`, `opd`, and search name, NIP or e-mail with `q`."""
    with runtime_of().reading() as uow:
        found = domain.list_registrations(
            uow,
            session_id,
            status=query.get("status"),
            opd=query.get("opd"),
            search=query.get("q"),
            limit=query["limit"],
            offset=query["offset"],
        )
        return [_registration_view(registration, place) for registration, place in found]


@blp.get("/sessions/<session_id>/registrations/counts")
@requires("organiser")
@blp.response(200, RegistrationCountsSchema)
@blp.alt_response(404, description="No such session")
def registration_counts(session_id):
    """How many registrations the session has, per status and per agency."""
    with runtime_of().reading() as uow:
        return domain.registration_counts(uow, session_id)


#: The CSV's columns, in order.
CSV_COLUMNS = (
    "id",
    "status",
    "position",
    "name",
    "nip",
    "email",
    "phone",
    "opd",
    "job_title",
    "language",
    "created_at",
)


def csv_answer(document: bytes, filename: str) -> Response:
    """A CSV document (made by :func:`shared.spreadsheets.spreadsheet_csv`) as a download."""
    return Response(
        document, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


@blp.get("/sessions/<session_id>/registrations.csv")
@requires("organiser")
@blp.response(
    200,
    content_type="text/csv",
    description="UTF-8 with a BOM; formula-like cells start with '; after the fixed columns, one column per "
    "question of the session, named by its key (yes/no answers as `yes`/`no`)",
)
@blp.alt_response(404, description="No such session")
def registrations_csv(session_id):
    """Every registration of the session as CSV for a spreadsheet (UTF-8 with BOM, formulas neutralised),
    with a column per question of the session."""
    rows = []
    offset, page = 0, 1000
    with runtime_of().reading() as uow:
        keys = [question["key"] for question in domain.get_session(uow, session_id).questions or []]
        while found := domain.list_registrations(uow, session_id, limit=page, offset=offset):
            for registration, place in found:
                view = _registration_view(registration, place)
                view["created_at"] = view["created_at"].isoformat()
                answers = view["answers"]
                rows.append([*(view[column] for column in CSV_COLUMNS), *(answer_cell(answers.get(k)) for k in keys)])
            offset += page
    return csv_answer(spreadsheet_csv((*CSV_COLUMNS, *keys), rows), f"registrations-{session_id[:36]}.csv")


# --- tickets and check-in ------------------------------------------------------------------------------


def check_in_view(row: Any, registration: Registration) -> dict[str, Any]:
    return {
        "registration_id": registration.id,
        "session_id": row.session_id,
        "name": registration.name,
        "nip": registration.nip,
        "email": registration.email,
        "opd": registration.opd,
        "job_title": registration.job_title,
        "checked_in_at": _shown(row.checked_in_at),
        "checked_in_by": row.checked_in_by,
        "checked_in_by_name": row.checked_in_by_name,
    }


@blp.post("/sessions/<session_id>/check-ins")
@requires("organiser")
@blp.arguments(CheckInRequestSchema)
@blp.response(201, CheckInSchema)
@blp.alt_response(404, description="No such session")
@blp.alt_response(
    409,
    description="A genuine ticket that cannot be checked in: already checked in (`already-checked-in`), "
    "its registration cancelled (`ticket-cancelled`) or waiting (`ticket-waitlisted`), or the session "
    "cancelled (`session-cancelled`); the problem's `type` names which",
)
@blp.alt_response(
    422,
    description="The code is no signed ticket — mistyped, mangled or forged (`invalid-ticket`) — or a "
    "ticket of another session (`ticket-for-another-session`); `errors.code` says why",
)
def check_in(body, session_id):
    """Check a participant in at the door by their ticket's code (scanned from its QR code, or typed).
    Emits `participant.checked_in`. Two organisers scanning one ticket at once: exactly one 201."""
    with runtime_of().unit_of_work() as uow:
        row, registration = domain.check_in(uow, session_id, body["code"], _caller(), _ticket_key())
        answer = check_in_view(row, registration)
        uow.commit()
    return answer


@blp.get("/sessions/<session_id>/check-ins")
@requires("organiser")
@blp.arguments(PageQuerySchema, location="query")
@blp.response(200, CheckInSchema(many=True))
@blp.alt_response(404, description="No such session")
def list_check_ins(page, session_id):
    """The session's attendance: who was checked in, in the order they came."""
    with runtime_of().reading() as uow:
        found = domain.list_check_ins(uow, session_id, page["limit"], page["offset"])
        return [check_in_view(row, registration) for row, registration in found]


#: The attendance CSV's columns, in order.
ATTENDANCE_COLUMNS = (
    "registration_id",
    "checked_in_at",
    "name",
    "nip",
    "email",
    "opd",
    "job_title",
    "checked_in_by_name",
)


def attendance_csv(session_id: str) -> Response:
    """The session's attendance as a spreadsheet download (the API's and the organiser page's)."""
    rows = []
    offset, page = 0, 1000
    with runtime_of().reading() as uow:
        while found := domain.list_check_ins(uow, session_id, page, offset):
            for row, registration in found:
                view = check_in_view(row, registration)
                view["checked_in_at"] = view["checked_in_at"].isoformat()
                rows.append([view[column] for column in ATTENDANCE_COLUMNS])
            offset += page
    return csv_answer(spreadsheet_csv(ATTENDANCE_COLUMNS, rows), f"attendance-{session_id[:36]}.csv")


@blp.get("/sessions/<session_id>/check-ins.csv")
@requires("organiser")
@blp.response(200, content_type="text/csv", description="UTF-8 with a BOM; formula-like cells start with '")
@blp.alt_response(404, description="No such session")
def check_ins_csv(session_id):
    """The session's attendance as CSV for a spreadsheet (UTF-8 with BOM, formulas neutralised)."""
    return attendance_csv(session_id)


# --- bulk imports --------------------------------------------------------------------------------------

#: The largest CSV an import takes (about 10,000 rows); the suite's 64 KiB is for JSON bodies.
IMPORT_MAX_BYTES = 2 * 1024 * 1024


class UploadTooLarge(Problem):
    status = 413
    title = "Content Too Large"
    slug = "upload-too-large"


def accepts_uploads(view: Callable[..., Any]) -> Callable[..., Any]:
    """Let this one view read a body up to :data:`IMPORT_MAX_BYTES` (Flask reads ``max_content_length``
    per request); a larger one is a 413 that names this limit."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        request.max_content_length = IMPORT_MAX_BYTES
        try:
            return view(*args, **kwargs)
        except RequestEntityTooLarge:
            raise UploadTooLarge(f"The file is larger than {IMPORT_MAX_BYTES // (1024 * 1024)} MiB.") from None

    return wrapper


class UnsupportedUpload(DomainError):
    status = 415
    title = "Unsupported Media Type"
    slug = "unsupported-media-type"


def uploaded_csv() -> tuple[bytes, str | None]:
    """The CSV of an import request: the ``file`` of a multipart form, or the body itself."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise domain.RuleViolation("Choose a CSV file to import.", {"file": ["Missing data for required field."]})
        return upload.read(), upload.filename
    if request.mimetype in ("text/csv", "text/plain", "application/csv", "application/vnd.ms-excel"):
        return request.get_data(), request.headers.get("X-Filename")
    raise UnsupportedUpload("Send the CSV as text/csv, or as the `file` of a multipart/form-data form.")


def import_view(job: Any, lines: list[Any]) -> dict[str, Any]:
    return {
        **{
            name: getattr(job, name)
            for name in ("id", "session_id", "filename", "state", "total", "done", "confirmed", "waitlisted")
        },
        **{name: getattr(job, name) for name in ("duplicates", "invalid", "refused")},
        "failed": job.invalid + job.refused,
        "progress": import_progress(job.total, job.done),
        "created_at": _shown(job.created_at),
        "finished_at": _shown(job.finished_at),
        "lines": [
            {
                "line": line.line,
                "name": line.name,
                "nip": line.nip,
                "outcome": line.outcome,
                "problems": line.problems,
                "registration_id": line.registration_id,
            }
            for line in lines
        ],
    }


def start_import(session_id: str, raw: bytes, filename: str | None, organiser: Principal) -> str:
    """Record an import and, for a small file, register it now (see ``domain``); returns its id."""
    runtime = runtime_of()
    with runtime.unit_of_work() as uow:
        job, held = domain.create_import(uow, session_id, raw, filename, organiser, ParticipantSchema().load)
        uow.commit()
    if held is not None:
        queue = domain.import_queue(runtime.engine)
        domain.work_on_import(runtime.unit_of_work, queue, held, job.id, links=participant_links())
    return job.id


_CSV_BODY = {
    "required": True,
    "description": "The agency's sheet saved as CSV (comma or semicolon, UTF-8 or Windows-1252): a header row "
    "naming the columns — `nama`/`name`, `nip`, `email`, `ponsel`/`phone`, `opd`, optional `jabatan`/`job_title` "
    "and a column named after each key of the session's questions, read as its answer (yes/no as `ya`/`tidak` "
    "or `yes`/`no`) — then one participant per row.",
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
        },
    },
}


@blp.post("/sessions/<session_id>/imports")
@requires("organiser")
@accepts_uploads
@idempotent
@blp.doc(requestBody=_CSV_BODY)
@blp.response(201, ImportSchema)
@blp.alt_response(404, description="No such session")
@blp.alt_response(413, description=f"The file is larger than {IMPORT_MAX_BYTES // (1024 * 1024)} MiB")
@blp.alt_response(415, description="Neither a text/csv body nor a multipart form with a `file`")
@blp.alt_response(422, description="The file cannot be read as a whole (`errors.file`: no header, a column missing)")
def import_registrations(session_id):
    """Register an agency's participants from a CSV, through the same rules as the form. Invalid rows are
    reported with line, field and reason; a NIP already registered is a `duplicate` (re-importing a file
    registers nobody twice). Up to 50 rows are registered before the answer (`state` `finished`); a larger
    file is registered by the worker: follow `GET …/imports/{id}` (`done` of `total`)."""
    raw, filename = uploaded_csv()
    import_id = start_import(session_id, raw, filename, _caller())
    with runtime_of().reading() as uow:
        job = domain.get_import(uow, session_id, import_id)
        return import_view(job, domain.import_lines(uow, import_id, limit=500))


@blp.get("/sessions/<session_id>/imports/<import_id>")
@requires("organiser")
@blp.arguments(ImportQuerySchema, location="query")
@blp.response(200, ImportSchema)
@blp.alt_response(404, description="No such import for this session")
def get_import(query, session_id, import_id):
    """An import's progress (`done` of `total`, `progress` 0..1) and its per-line report."""
    with runtime_of().reading() as uow:
        job = domain.get_import(uow, session_id, import_id)
        lines = domain.import_lines(
            uow, import_id, problems_only=query["lines"] == "problems", limit=query["limit"], offset=query["offset"]
        )
        return import_view(job, lines)
