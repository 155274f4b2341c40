"""Registration's pages for people: server-rendered, usable without JavaScript and on a 360-px phone.

Thin adapters like the API views: each reads a form, validates it with **the API's own marshmallow schema**
(so a page refuses exactly what the API refuses, with the same rule in the visitor's language), calls one
domain operation, commits, and redirects (post/redirect/get), or renders the form again with inline errors
and everything the visitor typed.

Who may open what (each view says so under its route):
- anyone: the portal ``/``, a session's page and form ``/sessions/<id>``, the sign-in page ``/login``;
- the participant, with the link they were given (``/manage/<id>?token=…``, the token a participant token
  from registration's issuer, checked like a bearer token): their registration's page and its cancel form;
- organisers: ``/admin/sessions`` (list, filters), ``/admin/sessions/new``, ``/admin/sessions/<id>`` (edit,
  publish, cancel, registrations, attendance, imports), ``/admin/sessions/<id>/check-in`` (the door: type a
  ticket's code, or scan its QR code where the phone's browser can), ``/admin/sessions/<id>/check-ins.csv``,
  ``/admin/sessions/<id>/imports`` (upload an agency's CSV) and ``/admin/sessions/<id>/imports/<import id>``
  (its progress, refreshing itself until done);
- anyone: ``/sessions/<id>.ics``, a published (or cancelled) session's calendar entry;
- the participant, with their link: ``/manage/<id>/ticket?token=…``, the printable ticket.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import segno
from flask import Blueprint, Response, abort, current_app, flash, g, redirect, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup
from marshmallow import ValidationError

from services.registration import domain, rules
from services.registration.api import IMPORT_MAX_BYTES, attendance_csv, participant_links, start_import
from services.registration.schemas import ParticipantSchema, SessionCreateSchema, TokenRequestSchema
from shared.errors import Conflict, DomainError, RuleViolation
from shared.http import client_address, runtime_of
from shared.i18n import N_, current_language
from shared.i18n import translate_refusal as _translate_any_refusal
from shared.pages import ROLE_HOME, error_page, page_principal, page_public, page_requires, safe_next, sign_in_response
from shared.ratelimit import public_write_limit
from shared.tokens import AuthError

pages = Blueprint("registration_pages", __name__)


@pages.app_template_filter("programme_label")
def _programme_label(programme) -> str:
    return rules.programme_label(programme.name, programme.year)


STAGE_NAMES = {
    "drum-up": _l("Drum-up"),
    "diagnose": _l("Diagnose"),
    "design": _l("Design"),
    "deliver": _l("Deliver"),
    "display": _l("Display"),
    "documentation": _l("Documentation"),
}
STATE_NAMES = {"draft": _l("draft"), "published": _l("published"), "cancelled": _l("cancelled")}
STATUS_NAMES = {"confirmed": _l("confirmed"), "waitlisted": _l("on the waiting list"), "cancelled": _l("cancelled")}

#: The rules' and schemas' refusals as the API states them (English); the pages show them translated.
RULE_REFUSALS = (
    N_("NIP must be exactly 18 digits 0-9."),
    N_("NIP digits 1-8 must be a valid birth date (YYYYMMDD)."),
    N_("NIP digits 9-14 must be an appointment month (YYYYMM) at least 15 years after birth."),
    N_("NIP digit 15 must be 1 (male) or 2 (female)."),
    N_("NIP digits 16-18 must be a sequence number from 001."),
    N_("Not a phone number."),
    N_("Must be a valid Indonesian phone number, e.g. 0812 3456 7890."),
    N_("Must be a mobile number (it receives the confirmation messages)."),
    N_("An email address must have an @-sign."),
    N_("The part after the @-sign is not valid. It should have a period."),
    N_("There must be something before the @-sign."),
    N_("The session is not published yet."),
    N_("The session has been cancelled."),
    N_("The session has already started; registration is closed."),
    N_("The session is full and keeps no waiting list."),
    N_("Already registered for this session."),
    N_("Must be a date between the years 2000 and 2099."),
    N_("Must be after starts_at."),
    N_("Must be after registration_opens_at."),
    N_("The session must end after it starts."),
    N_("Is in the past (set record to true for a session that already happened)."),
    N_("Only a draft session can be published; this one is %(state)s."),
    N_("The session is already cancelled."),
    N_("A cancelled session cannot be changed."),
    # rules.CHECK_IN_REFUSALS, as the door's page shows them
    N_("This ticket is for another session."),
    N_("This registration was cancelled; its ticket is no longer valid."),
    N_("This registrant is on the waiting list and holds no seat yet."),
    N_("This ticket was already checked in."),
    N_("This is not a ticket code: a code has 16 letters and digits, e.g. ABCD-EFGH-JKLM-NPQR."),
    N_("This ticket code is not valid: no ticket has it (check it was typed right)."),
    N_("Not a ticket code (16 letters and digits, e.g. ABCD-EFGH-JKLM-NPQR)."),
    N_("No ticket has this code."),
    # the session's extra questions: rules.check_answers and the schemas
    N_("This question must be answered."),
    N_("The session asks no such question."),
    N_("Must be text."),
    N_("Must be text without control characters (line breaks are allowed)."),
    N_("Must be yes or no (true or false)."),
    N_("Must be text or true/false."),
    N_("Must be a short name of lower-case letters, digits, - or _, starting with a letter (at most 40)."),
    N_("Is a registration field's name; choose another key."),
    N_("A choice question needs its choices."),
    N_("Only a choice question has choices."),
    N_("Each choice must be different."),
    N_("Only a text question has a maximum length."),
)
_TEMPLATED_RULE_REFUSALS = (
    (
        re.compile(r"^Must be one of the programme's agencies \(OPD\): (?P<choices>.+)\.$"),
        N_("Must be one of the programme's agencies (OPD): %(choices)s."),
    ),
    (
        re.compile(r"^NIP (?P<nip>\d+) is already registered for this session\.$"),
        N_("NIP %(nip)s is already registered for this session."),
    ),
    (
        re.compile(r"^Only a draft session can be published; this one is (?P<state>\w+)\.$"),
        N_("Only a draft session can be published; this one is %(state)s."),
    ),
    # the session's extra questions (rules.question_definition_problems, rules.question_change_refusal)
    (
        re.compile(r"^The key (?P<key>\S+) is used by two questions; each needs its own\.$"),
        N_("The key %(key)s is used by two questions; each needs its own."),
    ),
    (
        re.compile(r"^A session asks at most (?P<most>\d+) questions\.$"),
        N_("A session asks at most %(most)s questions."),
    ),
    (
        re.compile(r"^People have registered: the question (?P<key>\S+) cannot be removed \(.*\)\.$"),
        N_("People have registered: the question %(key)s cannot be removed (their answers would be lost)."),
    ),
    (
        re.compile(r"^People have registered: the new question (?P<key>\S+) must be optional \(.*\)\.$"),
        N_(
            "People have registered: the new question %(key)s must be optional "
            "(those already registered have not answered it)."
        ),
    ),
    (
        re.compile(r"^People have registered: the question (?P<key>\S+) cannot change its kind \(.*\)\.$"),
        N_(
            "People have registered: the question %(key)s cannot change its kind (the answers given would no longer fit)."
        ),
    ),
    (
        re.compile(r"^People have registered: the question (?P<key>\S+) cannot become required \(.*\)\.$"),
        N_("People have registered: the question %(key)s cannot become required (some have not answered it)."),
    ),
    (
        re.compile(
            r"^People have registered: the question (?P<key>\S+) must keep its choices "
            r"\((?P<choices>.*) may have been chosen\)\.$"
        ),
        N_("People have registered: the question %(key)s must keep its choices (%(choices)s may have been chosen)."),
    ),
    (
        re.compile(r"^People have registered: the question (?P<key>\S+) cannot allow shorter answers than before\.$"),
        N_("People have registered: the question %(key)s cannot allow shorter answers than before."),
    ),
)


def translate_refusal(message: str) -> str:
    """A refusal of registration's rules or schemas in the visitor's language."""
    return _translate_any_refusal(message, _TEMPLATED_RULE_REFUSALS)


#: The registration form's fields, in the order shown; the names are the API's (ParticipantSchema).
PARTICIPANT_FIELDS = ("name", "nip", "email", "phone", "opd", "job_title")


def _now() -> datetime:
    return datetime.now(UTC)


def _refusals(error: ValidationError | DomainError) -> dict[str, list[str]]:
    """Field → the refusals of the API's schema or rules, each in the visitor's language."""
    messages = error.messages if isinstance(error, ValidationError) else (error.errors or {})
    if not isinstance(messages, dict):
        messages = {"_schema": messages}
    refusals: dict[str, list[str]] = {}
    for field, field_messages in messages.items():
        items = field_messages if isinstance(field_messages, list) else [field_messages]
        refusals[field] = [translate_refusal(str(message)) for message in items]
    return refusals


# --- what a visitor sees about a session -------------------------------------------------------------


def availability(lab_session: Any, seats: Any, now: datetime) -> dict[str, Any]:
    """Whether the session takes registrations now, and the badge that says so.

    The decision is the domain's rule (:func:`rules.registration_refusal`, the same one that refuses a
    registration with 409); only the wording is the page's.
    """
    window = rules.SessionWindow(
        lab_session.state, lab_session.starts_at, lab_session.registration_opens_at, lab_session.registration_closes_at
    )
    refusal = rules.registration_refusal(window, now)
    if refusal is not None:
        if (
            lab_session.state == "published"
            and lab_session.registration_opens_at
            and now < lab_session.registration_opens_at
        ):
            return {"open": False, "kind": "closed", "label": _("registration not open yet")}
        if lab_session.state == "cancelled":
            return {"open": False, "kind": "closed", "label": _("cancelled")}
        return {"open": False, "kind": "closed", "label": _("registration closed")}
    if seats.available > 0:
        return {
            "open": True,
            "kind": "ok",
            "label": _("%(left)s of %(capacity)s seats left", left=seats.available, capacity=seats.capacity),
        }
    if lab_session.waitlist:
        return {"open": True, "kind": "full", "label": _("full — waiting list open")}
    return {"open": False, "kind": "closed", "label": _("full — waiting list closed")}


# --- the participant portal --------------------------------------------------------------------------


@pages.get("/")
@page_public
def portal():
    """Upcoming published sessions, grouped by programme and stage, with the seats left. Anyone may open it."""
    now = _now()
    with runtime_of().reading() as uow:
        programmes = {p.id: p for p in domain.list_programmes(uow, limit=500)}
        sessions = domain.list_sessions(uow, limit=500, starts_from=now - timedelta(hours=12))
    groups: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
    for lab_session, seats in sessions:
        programme = programmes.get(lab_session.programme_id) if lab_session.programme_id else None
        key = (programme.name if programme else "", lab_session.stage or "")
        group = groups.setdefault(
            key,
            {
                "programme": programme,
                "stage": STAGE_NAMES.get(lab_session.stage or "", None),
                "sessions": [],
            },
        )
        group["sessions"].append(
            {"session": lab_session, "seats": seats, "availability": availability(lab_session, seats, now)}
        )
    ordered = sorted(groups.items(), key=lambda item: (item[0][0] == "", item[0][0], _stage_order(item[0][1])))
    return render_template("registration/portal.html", groups=[group for _key, group in ordered])


def _stage_order(stage: str) -> int:
    return rules.STAGES.index(stage) if stage in rules.STAGES else len(rules.STAGES)


# --- a session's page and its registration form ------------------------------------------------------


def _session_and_programme(uow, session_id: str):
    lab_session = domain.get_session(uow, session_id)
    programme = domain.get_programme(uow, lab_session.programme_id) if lab_session.programme_id else None
    return lab_session, programme


def _participant_input(form) -> dict[str, Any]:
    """The form's fields as the API's JSON body: blank fields are absent (so a required one is "missing"),
    and the language is the page's, so every later message reaches the participant in it."""
    typed = {name: form.get(name, "").strip() for name in PARTICIPANT_FIELDS}
    return {**{name: value for name, value in typed.items() if value}, "language": current_language()}


#: The registration form names the answer to question ``k`` ``answers.k``: the name its refusal has.
ANSWER_PREFIX = "answers."


def _typed_answers(form) -> dict[str, str]:
    """What the visitor typed or chose for each question, by key (blank ones too: they are shown again)."""
    return {name[len(ANSWER_PREFIX) :]: value for name, value in form.items() if name.startswith(ANSWER_PREFIX)}


def _questions_of(session_id: str) -> list[rules.Question]:
    with runtime_of().reading() as uow:
        return domain.get_session(uow, session_id).questions or []


@pages.route("/sessions/<session_id>", methods=["GET", "POST"])
@page_public
@public_write_limit
def session_page(session_id: str):
    """A session and its registration form. Anyone may open it and register (no account needed)."""
    runtime = runtime_of()
    values: dict[str, str] = {name: "" for name in PARTICIPANT_FIELDS}
    errors: dict[str, list[str]] = {}
    status = 200
    answers: dict[str, str] = {}
    if request.method == "POST":
        values.update({name: request.form.get(name, "") for name in PARTICIPANT_FIELDS})
        answers = _typed_answers(request.form)
        # the questions say which answers are yes/no (read outside the registration's transaction, and only
        # when the form has answers: what it decides is checked again under the lock)
        questions = _questions_of(session_id) if answers else []
        try:
            body = {**_participant_input(request.form), "answers": rules.typed_answers(questions, answers)}
            participant = ParticipantSchema().load(body)
            with runtime.unit_of_work() as uow:
                registration = domain.register_participant(uow, session_id, participant, links=participant_links())
                uow.commit()  # at once: it releases the session row's lock
        except ValidationError as error:
            # the schema refused a field: say at once what the questions would refuse too, so the visitor
            # corrects everything in one go
            _stored, answer_problems = rules.check_answers(questions or _questions_of(session_id), body["answers"])
            errors, status = {**_refusals(RuleViolation("", answer_problems)), **_refusals(error)}, 422
        except RuleViolation as error:
            errors, status = _refusals(error), 422
        except Conflict as error:
            errors, status = _refusals(error) or {"_schema": [translate_refusal(error.detail)]}, 409
        else:
            return _to_manage_page(registration)
    with runtime.reading() as uow:
        lab_session, programme = _session_and_programme(uow, session_id)
        seats = domain.seat_count(uow, lab_session)
    if lab_session.state == "draft" and not _is_organiser():
        abort(404)  # a draft is not public yet
    return (
        render_template(
            "registration/session.html",
            lab_session=lab_session,
            programme=programme,
            stage=STAGE_NAMES.get(lab_session.stage or ""),
            availability=availability(lab_session, seats, _now()),
            values=values,
            answers=answers,
            questions=lab_session.questions or [],
            errors=errors,
        ),
        status,
    )


def _is_organiser() -> bool:
    principal = page_principal()
    return principal is not None and principal.role == "organiser"


def _to_manage_page(registration):
    """After registering: to the participant's own page, opened with their participant token — the one
    signed as it registered, which its confirmation mail's link carries too."""
    token = registration.manage_token
    flash(_("You are registered. Keep this page's address: it is your link to this registration."), "ok")
    return redirect(domain.MANAGE_PATH.format(registration_id=registration.id, token=token), 303)


# --- the participant's own page ----------------------------------------------------------------------


def _participant_from(token: str):
    verifier = current_app.extensions["labinov_verifier"]
    try:
        return verifier.verify(token)
    except AuthError:
        return None


@pages.get("/manage/<registration_id>")
@page_public
def manage(registration_id: str):
    """The participant's page for their registration. Whoever holds the link's participant token (or an
    organiser's sign-in) may open it; anyone else gets 403."""
    token = request.args.get("token", "")
    principal = _participant_from(token) if token else page_principal()
    if principal is None:
        return _link_refused()
    try:
        with runtime_of().reading() as uow:
            registration, access = domain.read_registration(uow, registration_id, principal)
            lab_session, programme = _session_and_programme(uow, registration.session_id)
    except domain.NotAllowed:
        return _link_refused()
    return render_template(
        "registration/manage.html",
        registration=registration,
        access=access,
        lab_session=lab_session,
        programme=programme,
        status_name=STATUS_NAMES.get(registration.status, registration.status),
        token=token,
        manage_link=request.url if token else None,
        **_ticket_context(registration, access, token),
    )


def _ticket_context(registration, access, token: str) -> dict[str, Any]:
    """What the ticket block of the manage page and the printable ticket show: the code, its QR code (an
    inline SVG: no script, no extra request, prints as sharp as the page), and whether it was used."""
    code = domain.ticket_code(participant_links().ticket_key, registration) if access == "full" else None
    if code is None:
        return {"ticket_code": None, "ticket_qr": None, "checked_in": None, "ticket_link": None}
    with runtime_of().reading() as uow:
        arrived = domain.check_in_of(uow, registration.id)
    qr = segno.make(code, error="m", micro=False)
    svg = qr.svg_inline(scale=6, border=2, dark="#000", light="#fff", title=_("Ticket QR code"), svgclass="qr")
    link = f"/registration/manage/{registration.id}/ticket" + (f"?token={token}" if token else "")
    return {"ticket_code": code, "ticket_qr": Markup(svg), "checked_in": arrived, "ticket_link": link}


@pages.get("/manage/<registration_id>/ticket")
@page_public
def ticket(registration_id: str):
    """The printable ticket: the QR code and the code as text, large. Whoever holds the participant's link
    (or an organiser) may open it; anyone else gets 403, and a registration without a seat has no ticket."""
    token = request.args.get("token", "")
    principal = _participant_from(token) if token else page_principal()
    if principal is None:
        return _link_refused()
    try:
        with runtime_of().reading() as uow:
            registration, access = domain.read_registration(uow, registration_id, principal)
            lab_session, programme = _session_and_programme(uow, registration.session_id)
    except domain.NotAllowed:
        return _link_refused()
    context = _ticket_context(registration, access, token)
    if context["ticket_code"] is None:
        return error_page(404, detail=_("This registration has no ticket: only a confirmed seat has one."))
    return render_template(
        "registration/ticket.html",
        registration=registration,
        lab_session=lab_session,
        programme=programme,
        token=token,
        **context,
    )


@pages.get("/sessions/<session_id>.ics")
@page_public
def session_calendar(session_id: str):
    """The session's calendar entry (iCalendar). Anyone may download it, for a published or cancelled
    session (a cancelled one says so, and a calendar that had it marks it cancelled); a draft is 404."""
    runtime = runtime_of()
    with runtime.reading() as uow:
        lab_session = domain.get_session(uow, session_id)
    if lab_session.state == "draft" and not _is_organiser():
        abort(404)
    body = domain.session_calendar(lab_session, runtime.settings.public_url, runtime.settings.timezone)
    return Response(
        body,
        mimetype="text/calendar",
        headers={"Content-Disposition": f'attachment; filename="labinov-{session_id[:36]}.ics"'},
    )


def _link_refused():
    return error_page(403, detail=_("This link does not open this registration. Use the link you were sent."))


@pages.post("/manage/<registration_id>/cancel")
@page_public
@public_write_limit
def cancel_own(registration_id: str):
    """Cancel a registration: its participant (the token from their link, sent with the form) or an organiser."""
    token = request.form.get("token", "")
    principal = _participant_from(token) if token else page_principal()
    if principal is None:
        return _link_refused()
    try:
        with runtime_of().unit_of_work() as uow:
            domain.cancel_registration(uow, registration_id, principal, links=participant_links())
            uow.commit()
        flash(_("Your registration is cancelled. Your seat goes to the next person waiting."), "ok")
    except domain.NotAllowed:
        return _link_refused()
    except Conflict:
        flash(_("This registration was already cancelled."), "error")
    target = f"/registration/manage/{registration_id}"
    return redirect(f"{target}?token={token}" if token else target, 303)


# --- signing in ---------------------------------------------------------------------------------------


@pages.route("/login", methods=["GET", "POST"])
@page_public
def login():
    """Sign-in for organisers and evaluators, with the token API's accounts and its throttle. Anyone may open it."""
    next_page = request.values.get("next", "")
    email = request.form.get("email", "")
    error = None
    status = 200
    headers: dict[str, str] = {}
    if request.method == "POST":
        try:
            credentials = TokenRequestSchema().load(
                {"email": email.strip(), "password": request.form.get("password", "")}
            )
            principal = domain.authenticate(
                runtime_of().unit_of_work, credentials["email"], credentials["password"], client_address()
            )
        except (ValidationError, domain.InvalidCredentials):
            error, status = _("Wrong e-mail or password."), 401
        except domain.TooManyAttempts as refusal:
            error, status, headers = _("Too many sign-in attempts. Try again in a few minutes."), 429, refusal.headers
        else:
            issuer = current_app.extensions["labinov_issuer"]
            target = safe_next(next_page, ROLE_HOME.get(principal.role, "/registration/"))
            return sign_in_response(redirect(target, 303), issuer.issue(principal), issuer.lifetime_seconds)
    return render_template("registration/login.html", email=email, error=error, next_page=next_page), status, headers


# --- organiser pages ----------------------------------------------------------------------------------

SESSION_FORM_FIELDS = (
    "title",
    "description",
    "programme_id",
    "stage",
    "location",
    "online_url",
    "starts_at",
    "ends_at",
    "capacity",
    "registration_opens_at",
    "registration_closes_at",
)
_TIME_FIELDS = ("starts_at", "ends_at", "registration_opens_at", "registration_closes_at")


def _local_input(moment: datetime | None) -> str:
    """An aware time as a ``datetime-local`` value in the programme's time zone."""
    if moment is None:
        return ""
    return moment.astimezone(runtime_of().settings.timezone).strftime("%Y-%m-%dT%H:%M")


def _session_input(form, schema_fields) -> dict[str, Any]:
    """The session form as the API's JSON body: local times get the programme's offset, blanks are absent."""
    zone = runtime_of().settings.timezone
    body: dict[str, Any] = {}
    for name in SESSION_FORM_FIELDS:
        value = form.get(name, "").strip()
        if not value or name not in schema_fields:
            continue
        if name in _TIME_FIELDS:
            try:
                value = datetime.fromisoformat(value).replace(tzinfo=zone).isoformat()
            except ValueError:
                pass  # the schema refuses it, naming the field
        elif name == "capacity":
            value = int(value) if value.isdigit() else value
        body[name] = value
    if "waitlist" in schema_fields:
        body["waitlist"] = form.get("waitlist") == "on"
    return body


# --- the session's extra questions on the organiser's form -------------------------------------------
#
# Why a repeated fieldset and not a line format in one textarea: each question is a few plain fields with
# their own labels — the question, its kind (a drop-down), "required" (a box to tick), the choices one per
# line — so an organiser fills it in as any other form, a screen reader names every field, and a typing
# slip is refused beside the field that has it instead of as "line 3 is malformed". The form shows the
# session's questions and :data:`BLANK_QUESTION_ROWS` empty ones (saving shows more); clearing a question's
# text removes it. The short name (key) is made from the question when left empty, and kept afterwards.

#: Empty question rows under the session's questions.
BLANK_QUESTION_ROWS = 3
QUESTION_KIND_NAMES = {"text": _l("Text"), "choice": _l("Choice (one of a list)"), "yes-no": _l("Yes or no")}
_QUESTION_ROW_FIELDS = ("key", "label", "kind", "required", "choices", "max_length")


def _question_rows(form) -> list[dict[str, str]]:
    """The question rows of a submitted session form, as typed (``q-<row>-<field>``)."""
    rows = []
    for row in range(rules.MAX_QUESTIONS + BLANK_QUESTION_ROWS):
        if f"q-{row}-label" not in form:
            break
        rows.append({name: form.get(f"q-{row}-{name}", "") for name in _QUESTION_ROW_FIELDS})
    return rows


def _questions_input(rows: list[dict[str, str]]) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows with a question as the API's ``questions``, and the row each came from (a refusal of
    ``questions.<i>`` is shown at its row). A row without a key gets one made from its label."""
    typed_keys = {row["key"].strip() for row in rows if row["label"].strip()}
    questions: list[dict[str, Any]] = []
    origin: list[int] = []
    for index, row in enumerate(rows):
        label = row["label"].strip()
        if not label:
            continue
        key = row["key"].strip() or rules.question_key_from(label, typed_keys)
        typed_keys.add(key)
        question: dict[str, Any] = {"key": key, "label": label, "kind": row["kind"] or "text"}
        question["required"] = row["required"] == "on"
        if question["kind"] == "choice":
            question["choices"] = [line.strip() for line in row["choices"].splitlines() if line.strip()]
        if question["kind"] == "text" and row["max_length"].strip():
            length = row["max_length"].strip()
            question["max_length"] = int(length) if length.isdigit() else length
        questions.append(question)
        origin.append(index)
    return questions, origin


def _at_rows(errors: dict[str, list[str]], origin: list[int]) -> dict[str, list[str]]:
    """Refusals of ``questions.<i>.<field>`` renamed ``questions.<row>.<field>`` for the form's rows."""
    shown = {}
    for name, reasons in errors.items():
        parts = name.split(".")
        if parts[0] == "questions" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < len(origin):
            name = ".".join(["questions", str(origin[int(parts[1])]), *parts[2:]])
        shown[name] = reasons
    return shown


def _rows_of(questions: list[rules.Question]) -> list[dict[str, str]]:
    """A session's questions as form rows, and the blank rows after them."""
    rows = [
        {
            "key": q["key"],
            "label": q["label"],
            "kind": q["kind"],
            "required": "on" if q["required"] else "",
            "choices": "\n".join(q.get("choices", [])),
            "max_length": str(q["max_length"]) if q["kind"] == "text" else "",
        }
        for q in questions
    ]
    blank = dict.fromkeys(_QUESTION_ROW_FIELDS, "")
    return rows + [dict(blank) for _ in range(min(BLANK_QUESTION_ROWS, rules.MAX_QUESTIONS - len(rows)))]


@pages.get("/admin/sessions")
@page_requires("organiser")
def admin_sessions():
    """Every session with filters (programme, stage, state, dates). Organisers only."""
    zone = runtime_of().settings.timezone
    filters = {name: request.args.get(name, "") for name in ("programme", "stage", "state", "from", "to")}
    query: dict[str, Any] = {
        "states": (filters["state"],) if filters["state"] in rules.SESSION_STATES else rules.SESSION_STATES
    }
    if filters["programme"]:
        query["programme_id"] = filters["programme"]
    if filters["stage"] in rules.STAGES:
        query["stage"] = filters["stage"]
    for name, key in (("from", "starts_from"), ("to", "starts_before")):
        try:
            day = datetime.fromisoformat(filters[name]).replace(tzinfo=zone) if filters[name] else None
        except ValueError:
            day = None
        if day is not None:
            query[key] = day + (timedelta(days=1) if name == "to" else timedelta())
    now = _now()
    with runtime_of().reading() as uow:
        programmes = domain.list_programmes(uow, limit=500)
        sessions = domain.list_sessions(uow, limit=500, **query)
    names = {p.id: rules.programme_label(p.name, p.year) for p in programmes}
    rows = [
        {
            "session": s,
            "seats": seats,
            "availability": availability(s, seats, now),
            "programme": names.get(s.programme_id or ""),
        }
        for s, seats in sessions
    ]
    return render_template(
        "registration/admin_sessions.html",
        rows=rows,
        filters=filters,
        programmes=programmes,
        stages=STAGE_NAMES,
        states=STATE_NAMES,
    )


def _session_form_context(lab_session=None, values=None, errors=None, question_rows=None) -> dict[str, Any]:
    """What the session form (``registration/_session_form.html``) needs, filled from ``lab_session``."""
    with runtime_of().reading() as uow:
        programmes = domain.list_programmes(uow, limit=500)
    if question_rows is None:
        question_rows = _rows_of((lab_session.questions if lab_session is not None else None) or [])
    if values is None:
        values = {name: "" for name in SESSION_FORM_FIELDS}
        values["waitlist"] = "on"
        if lab_session is not None:
            for name in SESSION_FORM_FIELDS:
                value = getattr(lab_session, name, None)
                values[name] = _local_input(value) if name in _TIME_FIELDS else ("" if value is None else str(value))
            values["waitlist"] = "on" if lab_session.waitlist else ""
    return {
        "lab_session": lab_session,
        "values": values,
        "errors": errors or {},
        "programmes": programmes,
        "stages": STAGE_NAMES,
        "schema_fields": SessionCreateSchema().fields,
        "zone": runtime_of().settings.timezone,
        "question_rows": question_rows,
        "question_kinds": QUESTION_KIND_NAMES,
        "default_text_length": rules.DEFAULT_TEXT_LENGTH,
    }


def _new_session_page(values=None, errors=None, status=200, question_rows=None):
    context = _session_form_context(None, values, errors, question_rows)
    return render_template("registration/admin_session_new.html", **context), status


@pages.route("/admin/sessions/new", methods=["GET", "POST"])
@page_requires("organiser")
def admin_new_session():
    """Create a session, as a draft or published at once. Organisers only."""
    if request.method == "GET":
        return _new_session_page()
    schema = SessionCreateSchema()
    values = {name: request.form.get(name, "") for name in (*SESSION_FORM_FIELDS, "waitlist")}
    body = _session_input(request.form, schema.fields)
    rows = _question_rows(request.form)
    body["questions"], origin = _questions_input(rows)
    if "state" in schema.fields:
        body["state"] = "published" if request.form.get("action") == "publish" else "draft"
    try:
        fields = schema.load(body)
        with runtime_of().unit_of_work() as uow:
            lab_session = domain.create_session(uow, fields, g.principal)
            uow.commit()
    except (ValidationError, RuleViolation) as error:
        errors = _at_rows(_refusals(error), origin)
        return _new_session_page(values=values, errors=errors, status=422, question_rows=rows)
    flash(_("The session was saved."), "ok")
    return redirect(f"/registration/admin/sessions/{lab_session.id}", 303)


@pages.route("/admin/sessions/<session_id>", methods=["GET", "POST"])
@page_requires("organiser")
def admin_session(session_id: str):
    """A session for its organisers: edit it, publish or cancel it, see its registrations. Organisers only."""
    values: dict[str, Any] | None = None
    errors: dict[str, list[str]] = {}
    rows: list[dict[str, str]] | None = None
    status = 200
    if request.method == "POST":
        schema = SessionCreateSchema(partial=True)
        values = {name: request.form.get(name, "") for name in (*SESSION_FORM_FIELDS, "waitlist")}
        body = _session_input(request.form, schema.fields)
        rows = _question_rows(request.form)
        body["questions"], origin = _questions_input(rows)
        if not rows:  # a form without the question rows (an older page) leaves the questions as they are
            del body["questions"]
        try:
            changes = schema.load(body)
            with runtime_of().unit_of_work() as uow:
                domain.change_session(uow, session_id, changes, links=participant_links())
                uow.commit()
        except (ValidationError, RuleViolation, Conflict) as error:
            errors = _refusals(error) or {"_schema": [translate_refusal(str(getattr(error, "detail", error)))]}
            errors = _at_rows(errors, origin)
            status = 409 if isinstance(error, domain.QuestionsInUse) else 422
        else:
            flash(_("The session was saved."), "ok")
            return redirect(f"/registration/admin/sessions/{session_id}", 303)
    filters = {name: request.args.get(name, "") for name in ("status", "opd", "q")}
    with runtime_of().reading() as uow:
        lab_session = domain.get_session(uow, session_id)
        seats = domain.seat_count(uow, lab_session)
        registrations = domain.list_registrations(
            uow,
            session_id,
            status=filters["status"] if filters["status"] in STATUS_NAMES else None,
            opd=filters["opd"] or None,
            search=filters["q"] or None,
            limit=500,
        )
        counts = domain.registration_counts(uow, session_id)
        arrived = domain.count_check_ins(uow, session_id)
        imports = domain.list_imports(uow, session_id, limit=5)
    return render_template(
        "registration/admin_session.html",
        arrived=arrived,
        imports=imports,
        **_session_form_context(lab_session, values, errors, rows),
        seats=seats,
        state_name=STATE_NAMES.get(lab_session.state, lab_session.state),
        registrations=registrations,
        counts=counts,
        filters=filters,
        statuses=STATUS_NAMES,
    ), status


@pages.post("/admin/sessions/<session_id>/<action>")
@page_requires("organiser")
def admin_session_action(session_id: str, action: str):
    """Publish or cancel a session (a POST with the form's CSRF token). Organisers only."""
    operations = {"publish": domain.publish_session, "cancel": domain.cancel_session}
    if action not in operations:
        abort(404)
    try:
        with runtime_of().unit_of_work() as uow:
            operations[action](uow, session_id)
            uow.commit()
        flash(_("The session is published.") if action == "publish" else _("The session is cancelled."), "ok")
    except Conflict as error:
        flash(translate_refusal(error.detail), "error")
    return redirect(f"/registration/admin/sessions/{session_id}", 303)


# --- the door: check-in, attendance -------------------------------------------------------------------


@pages.route("/admin/sessions/<session_id>/check-in", methods=["GET", "POST"])
@page_requires("organiser")
def admin_check_in(session_id: str):
    """Check participants in at the door by their ticket's code. Organisers only.

    Typing the code always works (a plain form); ``labinov-check-in.js`` adds camera scanning where the
    browser has the BarcodeDetector API, filling in the same form. Each POST answers with the outcome on the
    same page (the code field empty and focused again), so a phone at the door goes from one to the next.
    """
    outcome: dict[str, Any] | None = None
    status = 200
    if request.method == "POST":
        code = request.form.get("code", "")
        try:
            with runtime_of().unit_of_work() as uow:
                row, registration = domain.check_in(uow, session_id, code, g.principal, participant_links().ticket_key)
                uow.commit()
            outcome = {"ok": True, "registration": registration, "row": row}
        except (domain.InvalidTicket, domain.CheckInRefused) as refusal:
            outcome = {"ok": False, "reason": translate_refusal(refusal.detail), "code": code}
            if isinstance(refusal, domain.CheckInRefused) and refusal.checked_in_at is not None:
                outcome["checked_in_at"] = refusal.checked_in_at
            status = refusal.status
    with runtime_of().reading() as uow:
        lab_session = domain.get_session(uow, session_id)
        seats = domain.seat_count(uow, lab_session)
        arrived = domain.count_check_ins(uow, session_id)
        latest = domain.list_check_ins(uow, session_id, limit=500)[-5:]
    return render_template(
        "registration/admin_check_in.html",
        lab_session=lab_session,
        seats=seats,
        arrived=arrived,
        latest=list(reversed(latest)),
        outcome=outcome,
    ), status


@pages.get("/admin/sessions/<session_id>/check-ins.csv")
@page_requires("organiser")
def admin_check_ins_csv(session_id: str):
    """The session's attendance as a spreadsheet (the API's export). Organisers only."""
    return attendance_csv(session_id)


# --- bulk imports -------------------------------------------------------------------------------------


def _allow_large_uploads() -> None:
    """The import form's upload may be larger than the suite's JSON limit: raise it for that one view
    before anything reads the body — CSRF protection reads the form in its own ``before_request`` hook,
    so this hook is put in front of it (see :func:`_install_upload_limit`)."""
    if request.endpoint == f"{pages.name}.admin_import":
        request.max_content_length = IMPORT_MAX_BYTES


@pages.record_once
def _install_upload_limit(state) -> None:
    state.app.before_request_funcs.setdefault(None, []).insert(0, _allow_large_uploads)


@pages.post("/admin/sessions/<session_id>/imports")
@page_requires("organiser")
def admin_import(session_id: str):
    """Upload an agency's CSV: its rows are registered through the same rules as the form. Organisers only."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        flash(_("Choose a CSV file to import."), "error")
        return redirect(f"/registration/admin/sessions/{session_id}#import", 303)
    try:
        import_id = start_import(session_id, upload.read(), upload.filename, g.principal)
    except RuleViolation as refusal:
        flash(_("The file cannot be imported: %(reason)s", reason=refusal.detail), "error")
        return redirect(f"/registration/admin/sessions/{session_id}#import", 303)
    return redirect(f"/registration/admin/sessions/{session_id}/imports/{import_id}", 303)


IMPORT_OUTCOME_NAMES = {
    "pending": _l("waiting"),
    "confirmed": _l("registered"),
    "waitlisted": _l("on the waiting list"),
    "duplicate": _l("already registered"),
    "invalid": _l("invalid"),
    "refused": _l("refused"),
}


@pages.get("/admin/sessions/<session_id>/imports/<import_id>")
@page_requires("organiser")
def admin_import_progress(session_id: str, import_id: str):
    """An import's progress and its report; it refreshes itself every few seconds until done (a meta
    refresh: no script needed). Organisers only."""
    with runtime_of().reading() as uow:
        lab_session = domain.get_session(uow, session_id)
        job = domain.get_import(uow, session_id, import_id)
        lines = domain.import_lines(uow, import_id, limit=500)
    return render_template(
        "registration/admin_import.html",
        lab_session=lab_session,
        job=job,
        lines=lines,
        progress=int(rules.import_progress(job.total, job.done) * 100),
        outcome_names=IMPORT_OUTCOME_NAMES,
    )
