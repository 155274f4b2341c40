"""Notification pages for people.

- ``/notification/mailbox`` — organisers: the development mailbox, which exists only while
  ``LABINOV_SMTP_URL`` is unset (a local ``make run``) and lists the mail the suite sent, every registrant's
  name and address with it; with a real mail server it answers 404.
- ``/notification/announcements`` (list), ``/announcements/new`` (write, preview for one recipient, send),
  ``/announcements/<id>`` (progress, refreshing itself while it sends; cancel; retry the failed) — organisers.
- ``/notification/unsubscribe/<token>`` — anyone holding the link: ``GET`` shows a button (link checkers
  and mail scanners open links, so a ``GET`` changes nothing); ``POST`` opts the address out of
  announcements — the button, or a mail program's one-click ``List-Unsubscribe=One-Click`` (RFC 8058). The
  signed token is the authority, so this POST needs no CSRF token (it is exempt in the app factory).
- ``/notification/inbox?token=…`` — a participant, with the token of their manage link (the page is public, the
  token is checked: a participant's, its registration not cancelled, else 403): their in-app inbox, newest
  first, paged; ``POST /notification/inbox/<id>/read`` (the token in the form, with the CSRF token) marks one read.
"""

from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import urlencode

from flask import Blueprint, abort, current_app, g, redirect, render_template, request
from flask_babel import gettext as _
from marshmallow import ValidationError

from services.notification import announcements, domain, inbox, rules
from services.notification.mail import MaildirTransport
from services.notification.messages import plain_text_of
from services.notification.schemas import AnnouncementCreateSchema
from shared.http import runtime_of
from shared.observability import current_correlation_id
from shared.pages import error_page, page_public, page_requires
from shared.problems import Problem

pages = Blueprint("notification_pages", __name__)


@pages.get("/mailbox")
@page_requires("organiser")
def mailbox():
    settings = runtime_of().settings
    if settings.smtp_url:
        abort(404)
    messages = MaildirTransport(settings.mailbox_dir).messages()
    return render_template("notification/mailbox.html", messages=[(m, plain_text_of(m)) for m in messages])


# --- announcements --------------------------------------------------------------------------------------


def _form_data(form) -> dict:
    """The announcement form as the API's JSON, so both check it with one schema."""
    kind = form.get("audience_kind", "session_id")
    value = form.get("audience_value", "").strip()
    audience: dict = {}
    if kind == "emails":
        audience["emails"] = [e.strip() for e in value.replace(",", "\n").splitlines() if e.strip()]
    elif kind == "checked_in":
        audience = {"session_id": value, "checked_in": True}
    elif kind in ("programme_id", "opd"):
        audience[kind] = value
    else:
        audience = {"session_id": value, "statuses": form.getlist("statuses") or ["confirmed"]}
    data = {"subject": form.get("subject", ""), "body": form.get("body", ""), "channels": form.getlist("channels")}
    if form.get("send_at"):
        data["send_at"] = form["send_at"]
    data["audience"] = audience
    return data


def _local_send_at(value: str) -> str | None:
    """A ``datetime-local`` input is in the programme's zone; the schema wants an aware time."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=runtime_of().settings.timezone)
    return moment.isoformat()


@pages.get("/announcements")
@page_requires("organiser")
def announcement_list():
    with runtime_of().reading() as uow:
        found = [announcements.progress(uow, a, failures=0) for a in announcements.list_recent(uow)]
    return render_template("notification/announcements.html", announcements=found)


@pages.route("/announcements/new", methods=["GET", "POST"])
@page_requires("organiser")
def announcement_new():
    form = request.form
    errors: dict = {}
    shown = None
    if request.method == "POST":
        raw = _form_data(form)
        if "send_at" in raw:
            raw["send_at"] = _local_send_at(raw["send_at"])
        runtime = runtime_of()
        try:
            data = AnnouncementCreateSchema().load(raw)
            if form.get("action") == "send":
                with runtime.unit_of_work() as uow:
                    created = announcements.create(uow, data, g.principal.email, current_correlation_id())
                    uow.commit()
                    return redirect(f"/notification/announcements/{created.id}", 303)
            with runtime.reading() as uow:
                shown = announcements.preview(uow, runtime, data) or {"empty": True}
        except ValidationError as exc:
            errors = exc.messages if isinstance(exc.messages, dict) else {"form": exc.messages}
        except Problem as problem:
            errors = problem.errors or {"form": [problem.detail]}
    return render_template(
        "notification/announcement_new.html",
        form=form,
        errors=errors,
        preview=shown,
        placeholders=rules.PLACEHOLDERS,
    )


@pages.get("/announcements/<announcement_id>")
@page_requires("organiser")
def announcement_detail(announcement_id):
    with runtime_of().reading() as uow:
        try:
            shown = announcements.progress(uow, announcements.get(uow, announcement_id))
        except Problem:
            abort(404)
    return render_template(
        "notification/announcement.html", a=shown, audience=json.dumps(shown["audience"], ensure_ascii=False)
    )


@pages.post("/announcements/<announcement_id>/cancel")
@page_requires("organiser")
def announcement_cancel(announcement_id):
    with runtime_of().unit_of_work() as uow:
        try:
            announcements.cancel(uow, announcement_id)
            uow.commit()
        except Problem:
            pass  # the page shows its state: it has gone already
    return redirect(f"/notification/announcements/{announcement_id}", 303)


@pages.post("/announcements/<announcement_id>/retry-failed")
@page_requires("organiser")
def announcement_retry(announcement_id):
    with runtime_of().unit_of_work() as uow:
        announcements.retry_failed(uow, announcement_id)
        uow.commit()
    return redirect(f"/notification/announcements/{announcement_id}", 303)


# --- opting out ---------------------------------------------------------------------------------------------


def _token_owner(token: str) -> tuple[str, str]:
    found = rules.read_unsubscribe_token(domain.unsubscribe_key(runtime_of()), token)
    if found is None:
        abort(404)
    return found


@pages.get("/unsubscribe/<token>")
@page_public
def unsubscribe_page(token):
    email, channel = _token_owner(token)
    return render_template("notification/unsubscribe.html", email=email, done=False)


@pages.post("/unsubscribe/<token>")
@page_public
def unsubscribe(token):
    email, channel = _token_owner(token)
    with runtime_of().unit_of_work() as uow:
        domain.opt_out(uow, email, channel)
        uow.commit()
    if request.form.get("List-Unsubscribe") == "One-Click":
        return "", 200
    return render_template("notification/unsubscribe.html", email=email, done=True)


# --- the in-app inbox ---------------------------------------------------------------------------------------

INBOX_PAGE_SIZE = 20


def _inbox_registration(token: str) -> str | None:
    """The registration whose inbox ``token`` opens, or ``None`` (not a participant's valid token, or cancelled)."""
    try:
        principal = current_app.extensions["labinov_verifier"].verify(token)
        with runtime_of().reading() as uow:
            return inbox.registration_of(uow, principal)
    except Problem:
        return None


@pages.get("/inbox")
@page_public
def inbox_page():
    token = request.args.get("token", "")
    registration_id = _inbox_registration(token) if token else None
    if registration_id is None:
        return error_page(403, detail=_("Open your inbox with the link from your confirmation."))
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    with runtime_of().reading() as uow:
        found = inbox.messages_of(uow, registration_id, INBOX_PAGE_SIZE + 1, (page - 1) * INBOX_PAGE_SIZE)
        unread = inbox.unread_count(uow, registration_id)
    return render_template(
        "notification/inbox.html",
        messages=found[:INBOX_PAGE_SIZE],
        unread=unread,
        token=token,
        page=page,
        newer=urlencode({"token": token, "page": page - 1}) if page > 1 else None,
        older=urlencode({"token": token, "page": page + 1}) if len(found) > INBOX_PAGE_SIZE else None,
    )


@pages.post("/inbox/<message_id>/read")
@page_public
def inbox_read(message_id):
    token = request.form.get("token", "")
    registration_id = _inbox_registration(token) if token else None
    if registration_id is None:
        return error_page(403, detail=_("Open your inbox with the link from your confirmation."))
    with runtime_of().unit_of_work() as uow:
        try:
            inbox.mark_read(uow, registration_id, message_id)
            uow.commit()
        except Problem:
            abort(404)
    return redirect(f"/notification/inbox?{urlencode({'token': token})}#m-{message_id}", 303)
