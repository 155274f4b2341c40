"""What a message says and how it is put together: Jinja2 templates in the recipient's language, and the
``EmailMessage`` the sender hands to the transport.

**Templates.** Each kind of message has one file per language, ``templates/notification/mail/<lang>/<kind>.j2``,
with three blocks: ``subject`` (one line), ``text`` (the plain-text part) and ``html`` (the HTML part's
content, wrapped in ``mail/_layout.html.j2``). The same file is loaded by two Jinja environments: the HTML
one autoescapes, so a participant's name like ``<b>`` is shown, never interpreted; the text one does not.
A recipient who chose English (``language`` in the registration events) reads English; everyone else
reads Bahasa Indonesia, the programme's language, with a short English summary below the line (Indonesian
is also what a participant who never chose gets, and guests of the programme may not read it).

**Rendering happens when the delivery is written**, not when it is sent: the delivery row keeps the text,
the HTML, the calendar entry and the ticket code, so what was sent can always be shown, and a resend after a
crash sends exactly the same message (with the same ``Message-ID``).

**Composing** (:func:`compose`) builds ``multipart/alternative`` (text, then HTML). A ticket code becomes a
QR code (segno, PNG) shown inline in the HTML part (``multipart/related``, ``cid:``); a calendar entry is
attached as ``text/calendar``. Announcements carry ``List-Unsubscribe`` (an HTTPS link from
``LABINOV_PUBLIC_URL``) and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058). Python's
``email`` package with the default policy encodes Indonesian names and subjects as UTF-8 (RFC 2047 words
in headers).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import segno
from icalendar import Calendar
from icalendar import Event as CalendarEvent
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

MAIL_TEMPLATES = Path(__file__).parent / "templates" / "notification" / "mail"
LANGUAGES = ("id", "en")
DEFAULT_LANGUAGE = "id"
MESSAGE_ID_DOMAIN = "labinov.local"


def _environment(autoescape: bool) -> Environment:
    """Templates are read once per process (``auto_reload`` off: no file check on every render — they ship
    with the code, so a changed template comes with a restart)."""
    return Environment(
        loader=FileSystemLoader(MAIL_TEMPLATES),
        auto_reload=False,
        undefined=StrictUndefined,
        autoescape=autoescape,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


_TEXT = _environment(autoescape=False)
_HTML = _environment(autoescape=True)


@dataclass(frozen=True)
class Rendered:
    """One message's parts in one language."""

    language: str
    subject: str
    text: str
    html: str


def language_of(value: str | None) -> str:
    return value if value in LANGUAGES else DEFAULT_LANGUAGE


def _block(environment: Environment, name: str, block: str, context: dict[str, Any]) -> str:
    """One block of a message's template; the language's shared macros are ``parts``."""
    parts = environment.get_template(f"{context['lang']}/_parts.j2").module
    template = environment.get_template(name)
    return "".join(template.blocks[block](template.new_context({**context, "parts": parts})))


def render(kind: str, language: str | None, context: dict[str, Any]) -> Rendered:
    """The subject, text and HTML of message ``kind`` in ``language`` (``id`` unless ``en``)."""
    language = language_of(language)
    name = f"{language}/{kind}.j2"
    context = {**context, "lang": language}
    subject = " ".join(_block(_TEXT, name, "subject", context).split())
    text = _block(_TEXT, name, "text", context).strip() + "\n\nLabinov · Laboratorium Inovasi Pelayanan Publik\n"
    content = Markup(_block(_HTML, name, "html", context))
    html = _HTML.get_template("_layout.html.j2").render(subject=subject, content=content, lang=language)
    return Rendered(language, subject, text, html)


def local_time(moment: datetime | None, timezone: tzinfo) -> str | None:
    """A time as people in the programme read it, with the zone's abbreviation: ``07-12-2026 09:00 WITA``."""
    return moment.astimezone(timezone).strftime("%d-%m-%Y %H:%M %Z") if moment else None


# --- attachments --------------------------------------------------------------------------------------------


def session_calendar_entry(
    *,
    session_id: str,
    title: str,
    starts_at: datetime,
    ends_at: datetime | None,
    location: str | None,
    online_url: str | None = None,
    manage_url: str | None = None,
) -> str | None:
    """The ``.ics`` text of a session, or ``None`` without an end time (a calendar entry needs both ends).

    The ``UID`` is the session id (``<id>@labinov``), the same as registration's own ``.ics`` of the session,
    so importing either again updates one entry instead of adding another."""
    if ends_at is None:
        return None
    calendar = Calendar()
    calendar.add("prodid", "-//Labinov//Notification//ID")
    calendar.add("version", "2.0")
    calendar.add("method", "PUBLISH")
    event = CalendarEvent()
    event.add("uid", f"{session_id}@labinov")
    event.add("dtstamp", datetime.now(UTC).replace(microsecond=0))
    event.add("dtstart", starts_at.astimezone(UTC))
    event.add("dtend", ends_at.astimezone(UTC))
    event.add("summary", title)
    if location:
        event.add("location", location)
    if online_url:
        event.add("url", online_url)
    if manage_url:
        event.add("description", manage_url)
    calendar.add_component(event)
    return calendar.to_ical().decode()


def ticket_qr_png(ticket_code: str) -> bytes:
    """The ticket's check-in code as a PNG QR code (what the door scans)."""
    buffer = io.BytesIO()
    segno.make(ticket_code, error="m").save(buffer, kind="png", scale=6, border=2)
    return buffer.getvalue()


# --- composing ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unsubscribe:
    """Where a recipient opts out of announcements with one click (RFC 8058)."""

    url: str


def message_id(delivery_id: str) -> str:
    """The same on every send of one delivery, so mail clients recognise a resend as the same message."""
    return f"<{delivery_id}@{MESSAGE_ID_DOMAIN}>"


def compose(delivery: Any, mail_from: str, unsubscribe: Unsubscribe | None = None) -> EmailMessage:
    """The e-mail of one delivery row: text and HTML alternatives, the QR inline, the ``.ics`` attached."""
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = delivery.recipient
    message["Subject"] = delivery.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = message_id(delivery.id)
    message["X-Labinov-Delivery"] = delivery.id
    if delivery.correlation_id:
        message["X-Request-ID"] = delivery.correlation_id
    if unsubscribe is not None:
        message["List-Unsubscribe"] = f"<{unsubscribe.url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(delivery.body)
    html = getattr(delivery, "html_body", None)
    if html:
        ticket_code = getattr(delivery, "ticket_code", None)
        if ticket_code:
            cid = make_msgid(domain=MESSAGE_ID_DOMAIN)
            message.add_alternative(html.replace("cid:ticket-qr", f"cid:{cid[1:-1]}"), subtype="html")
            html_part = message.get_payload()[-1]
            html_part.add_related(
                ticket_qr_png(ticket_code), "image", "png", cid=cid, filename="tiket-qr.png", disposition="inline"
            )
        else:
            message.add_alternative(html, subtype="html")
    ics = getattr(delivery, "ics", None)
    if ics:
        message.add_attachment(
            ics.encode(), "text", "calendar", filename="labinov.ics", params={"method": "PUBLISH", "charset": "utf-8"}
        )
    language = getattr(delivery, "language", None)
    if language:  # last: making the message multipart moves the Content-* headers into its first part
        message["Content-Language"] = language
    return message


def plain_text_of(message: EmailMessage) -> str:
    """The plain-text part of a message as people read it (the mailbox page, tests)."""
    part = message.get_body(preferencelist=("plain", "html"))
    return part.get_content() if part is not None else ""


def announcement_html(body: str) -> Markup:
    """An organiser's plain text as HTML paragraphs: escaped, never interpreted (no template code)."""
    paragraphs = [p for p in re.split(r"\n\s*\n", body.strip()) if p.strip()]
    return Markup("").join(
        Markup("<p>{}</p>").format(Markup("<br>").join(line for line in p.splitlines())) for p in paragraphs
    )
