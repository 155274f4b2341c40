"""Organisers' announcements: write one, schedule or send it, cancel it before it goes, follow its progress.

**Fan-out design.** An announcement is a row of its own work queue (``announcements``: ``scheduled`` and due
from ``send_at``). :func:`expand_due` — the worker's announcement loop, any number of them in any number of
processes — claims due announcements with a lease (``SKIP LOCKED``), and for each:

1. takes the audience from the service's own projection *at that moment* (registrations per session,
   programme or agency, check-ins, or the explicit list), one entry per address (a person registered twice
   gets one message), minus those who opted out of announcements on the channel;
2. writes one delivery per recipient and channel in batches of :data:`FAN_OUT_BATCH`, each batch its own
   transaction with ``INSERT … ON CONFLICT DO NOTHING`` on the unique ``(caused_by, recipient, channel)``,
   renewing the lease before each batch — a worker that dies half way leaves a partial fan-out that the
   next holder completes without writing anyone twice;
3. marks it ``expanded``, guarded by its claim token.

Each batch also writes, in its transaction, the members' SMS/WhatsApp messages when the announcement's
``channels`` name them (:func:`services.notification.gateway.queue_announcement`: its own table and loop) and
their in-app inbox copies (:func:`services.notification.inbox.copy_announcement`); mail goes only when
``channels`` names ``email``, and the opt-outs are per channel.

The deliveries are then sent by every worker's mail loop, competing on the deliveries queue, so more
workers send faster. A scheduled announcement is only a row with a future ``send_at``: a restart loses
nothing, and it goes when due. Cancelling flips ``scheduled`` to ``cancelled`` in one guarded ``UPDATE``; once
a fan-out holds it, it is too late (409), except that the deliveries not yet claimed can still be cancelled.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from services.notification import domain, gateway, inbox, messages, rules
from services.notification.tables import Announcement, Delivery, Recipient, RegistrationView, SessionView
from shared.clock import utcnow
from shared.db import UnitOfWork
from shared.errors import Conflict, NotFound, RuleViolation
from shared.runtime import ServiceRuntime
from shared.workqueue import WorkQueue

log = logging.getLogger(__name__)

FAN_OUT_BATCH = 500
FAN_OUT_LEASE = timedelta(minutes=2)
CHANNELS = ("email", "sms", "whatsapp")
#: Registration states an audience by session may ask for.
AUDIENCE_STATUSES = ("confirmed", "waitlisted")
announcements = Announcement.__table__


@dataclass(frozen=True)
class AudienceMember:
    email: str
    name: str
    language: str
    opd: str | None
    session_id: str | None


# --- writing ----------------------------------------------------------------------------------------------


def check_placeholders(subject: str, body: str) -> None:
    """Refuse (422, naming it) any placeholder outside the fixed list."""
    errors = {}
    for field, text in (("subject", subject), ("body", body)):
        unknown = rules.unknown_placeholders(text)
        if unknown:
            errors[field] = [
                f"Unknown placeholder {{{name}}}; use one of: {', '.join(rules.PLACEHOLDERS)}." for name in unknown
            ]
    if errors:
        raise RuleViolation("The announcement uses placeholders that do not exist.", errors)


def create(uow: UnitOfWork, data: dict[str, Any], organiser: str, correlation_id: str | None) -> Announcement:
    """A new announcement, scheduled for ``send_at`` (now when absent)."""
    check_placeholders(data["subject"], data["body"])
    send_at = data.get("send_at") or datetime.now(UTC)
    announcement = Announcement(
        subject=data["subject"],
        body=data["body"],
        channels=json.dumps(sorted(set(data["channels"]))),
        audience=json.dumps(data["audience"], sort_keys=True),
        status="scheduled",
        send_at=send_at.astimezone(UTC).replace(tzinfo=None),
        created_by=organiser,
        correlation_id=correlation_id,
        opted_out=0,
        created_at=datetime.now(UTC),
    )
    uow.session.add(announcement)
    uow.flush()
    return announcement


def get(uow: UnitOfWork, announcement_id: str) -> Announcement:
    announcement = uow.session.get(Announcement, announcement_id)
    if announcement is None:
        raise NotFound(f"No announcement {announcement_id}.")
    return announcement


def cancel(uow: UnitOfWork, announcement_id: str) -> Announcement:
    """Stop an announcement that has not gone yet; its unclaimed deliveries too, if the fan-out has begun."""
    announcement = get(uow, announcement_id)
    now = utcnow()
    changed = uow.session.execute(
        update(announcements)
        .where(
            announcements.c.id == announcement_id,
            announcements.c.status == "scheduled",
            (announcements.c.claimed_until.is_(None)) | (announcements.c.claimed_until < now),
        )
        .values(status="cancelled", cancelled_at=datetime.now(UTC))
    ).rowcount
    if not changed:
        raise Conflict(f"The announcement is {announcement.status} and can no longer be cancelled.")
    uow.session.refresh(announcement)
    return announcement


def retry_failed(uow: UnitOfWork, announcement_id: str) -> int:
    """Queue the announcement's failed deliveries again, with fresh attempts; how many."""
    get(uow, announcement_id)
    d = Delivery.__table__.c
    return (
        uow.session.execute(
            update(Delivery.__table__)
            .where(d.announcement_id == announcement_id, d.status == "failed")
            .values(status="queued", attempts=0, next_attempt_at=utcnow(), claim_token=None, claimed_until=None)
        ).rowcount
        or 0
    )


def progress(uow: UnitOfWork, announcement: Announcement, failures: int = 100) -> dict[str, Any]:
    """``total``, ``queued`` (still to go, ``sending`` included), ``sent``, ``failed`` (``bounced`` included: it
    did not arrive) and the failures."""
    d = Delivery.__table__.c
    counts = dict(
        uow.session.execute(
            select(d.status, func.count()).where(d.announcement_id == announcement.id).group_by(d.status)
        ).all()
    )
    for state, count in gateway.counts_of_announcement(uow, announcement.id).items():  # SMS and WhatsApp
        counts[state] = counts.get(state, 0) + count
    counts["sent"] = counts.get("sent", 0) + counts.pop("delivered", 0)
    counts["failed"] = counts.get("failed", 0) + counts.pop("bounced", 0)  # it did not arrive either way
    failed = uow.session.execute(
        select(d.recipient, d.last_error, d.attempts)
        .where(d.announcement_id == announcement.id, d.status.in_(("failed", "bounced")))
        .order_by(d.recipient)
        .limit(failures)
    ).all()
    queued = counts.get("queued", 0) + counts.get("sending", 0)
    status = announcement.status
    if status == "expanded":
        status = "sending" if queued else "sent"
    return {
        "id": announcement.id,
        "status": status,
        "subject": announcement.subject,
        "body": announcement.body,
        "channels": json.loads(announcement.channels),
        "audience": json.loads(announcement.audience),
        "send_at": announcement.send_at.replace(tzinfo=UTC),
        "created_at": announcement.created_at,
        "total": sum(counts.values()),
        "queued": queued,
        "sent": counts.get("sent", 0),
        "failed": counts.get("failed", 0),
        "cancelled": counts.get("cancelled", 0),
        "opted_out": announcement.opted_out,
        "failures": [{"recipient": r, "error": e, "attempts": a} for r, e, a in failed],
    }


def list_recent(uow: UnitOfWork, limit: int = 50, offset: int = 0) -> list[Announcement]:
    query = select(Announcement).order_by(Announcement.created_at.desc(), Announcement.id)
    return list(uow.session.scalars(query.limit(limit).offset(offset)))


# --- the audience and the message each member gets ---------------------------------------------------------


def audience_of(uow: UnitOfWork, audience: dict[str, Any]) -> list[AudienceMember]:
    """The audience as the projection has it now: one member per address, in address order."""
    r = RegistrationView
    if "emails" in audience:
        wanted = sorted({email.strip().lower() for email in audience["emails"]})
        known = {row.email: row for row in uow.session.scalars(select(Recipient).where(Recipient.email.in_(wanted)))}
        return [
            AudienceMember(
                email,
                known[email].name if email in known else email.split("@")[0],
                known[email].language if email in known else messages.DEFAULT_LANGUAGE,
                known[email].opd if email in known else None,
                None,
            )
            for email in wanted
        ]
    # the columns only, not mapped objects: an audience of 20,000 held as ORM instances (and in the identity
    # map) cost the fan-out worker tens of megabytes and a share of its CPU
    query = select(r.email, r.name, r.language, r.opd, r.session_id)
    if "session_id" in audience:
        query = query.where(r.session_id == audience["session_id"])
        if audience.get("checked_in"):
            query = query.where(r.checked_in_at.is_not(None))
        else:
            query = query.where(r.status.in_(audience.get("statuses") or ["confirmed"]))
    elif "programme_id" in audience:
        query = query.where(r.programme_id == audience["programme_id"], r.status.in_(AUDIENCE_STATUSES))
    elif "opd" in audience:
        query = query.where(r.opd == audience["opd"], r.status.in_(AUDIENCE_STATUSES))
    else:
        raise RuleViolation("Say who hears it.", {"audience": ["Give session_id, programme_id, opd or emails."]})
    members: dict[str, AudienceMember] = {}
    for row in uow.session.execute(query.order_by(r.email, r.registration_id)):
        if row.email not in members:
            members[row.email] = AudienceMember(row.email, row.name, row.language, row.opd, row.session_id)
    return list(members.values())


def placeholder_values(uow: UnitOfWork, member: AudienceMember, runtime: ServiceRuntime) -> dict[str, str | None]:
    session = uow.session.get(SessionView, member.session_id) if member.session_id else None
    return {**_member_values(member), **_session_values(session, runtime)}


def _member_values(member: AudienceMember) -> dict[str, str | None]:
    return {"name": member.name, "email": member.email, "opd": member.opd}


def _session_values(session: SessionView | None, runtime: ServiceRuntime) -> dict[str, str | None]:
    timezone = runtime.settings.timezone
    return {
        "session_title": session.title if session else None,
        "session_starts_at": messages.local_time(session.starts_at, timezone) if session else None,
        "session_location": session.location if session else None,
        "online_url": session.online_url if session else None,
    }


def message_for(
    uow: UnitOfWork,
    announcement: Announcement,
    member: AudienceMember,
    runtime: ServiceRuntime,
    values: dict[str, str | None] | None = None,
    unsubscribe_url: str | None = None,
) -> domain.Message:
    """What one member gets: the organiser's text with its placeholders filled, never interpreted as code.
    The fan-out passes the member's ``values`` and opt-out link, worked out once per batch."""
    values = placeholder_values(uow, member, runtime) if values is None else values
    body = rules.fill_placeholders(announcement.body, values)
    context = {
        "subject": rules.fill_placeholders(announcement.subject, values),
        "body": body,
        "body_html": messages.announcement_html(body),
        "unsubscribe_url": unsubscribe_url or domain.unsubscribe_url(runtime, member.email),
    }
    return domain.Message("announcement", member.email, member.name, member.language, context)


def preview(uow: UnitOfWork, runtime: ServiceRuntime, data: dict[str, Any]) -> dict[str, Any] | None:
    """The message the first member of the audience would get (``None`` for an empty audience)."""
    check_placeholders(data["subject"], data["body"])
    members = audience_of(uow, data["audience"])
    if not members:
        return None
    draft = Announcement(subject=data["subject"], body=data["body"])
    message = message_for(uow, draft, members[0], runtime)
    rendered = messages.render(message.kind, message.language, message.context)
    return {"recipient": members[0].email, "subject": rendered.subject, "text": rendered.text, "audience": len(members)}


# --- fan-out ------------------------------------------------------------------------------------------------


def announcement_queue(runtime: ServiceRuntime) -> WorkQueue:
    c = announcements.c
    return WorkQueue(
        runtime.engine,
        announcements,
        pending=(c.status == "scheduled",),
        due_at=c.send_at,
        order_by=(c.send_at,),
        lease=FAN_OUT_LEASE,
    )


def expand_due(runtime: ServiceRuntime, batch_size: int = FAN_OUT_BATCH) -> int:
    """Fan due announcements out into deliveries (see the module docstring); how many were claimed."""
    queue = announcement_queue(runtime)
    token, rows = queue.claim(1)
    for row in rows:
        with runtime.reading() as uow:
            announcement = uow.session.get(Announcement, row.id)
            assert announcement is not None
            members = audience_of(uow, json.loads(announcement.audience))
            refusing = domain.opted_out(uow.session, [m.email for m in members])
            uow.session.expunge(announcement)
        by_mail = "email" in json.loads(announcement.channels)
        unsubscribe_url = domain.unsubscribe_links(runtime)
        written = 0
        for start in range(0, len(members), batch_size):
            if not queue.renew(token, row.id):
                log.warning("announcement %s: lease lost during fan-out; its new holder completes it", row.id)
                break
            with runtime.unit_of_work() as uow:
                part = members[start : start + batch_size]
                # each member's placeholders once for mail, SMS/WhatsApp and inbox alike; the batch's sessions
                # in one query, each session's values worked out once
                sessions = {s.session_id: _session_values(s, runtime) for s in _sessions_of(uow, part)}
                no_session = _session_values(None, runtime)
                values = {m.email: {**_member_values(m), **sessions.get(m.session_id or "", no_session)} for m in part}
                if by_mail:
                    batch = [
                        message_for(uow, announcement, m, runtime, values[m.email], unsubscribe_url(m.email))
                        for m in part
                        if m.email not in refusing
                    ]
                    written += domain.queue_messages(
                        uow, announcement.id, announcement.correlation_id, batch, announcement_id=announcement.id
                    )

                def values_of(member, values=values):
                    return values[member.email]

                written += gateway.queue_announcement(uow, runtime, announcement, part, values_of)
                inbox.copy_announcement(uow, announcement, part, values_of, rules.fill_placeholders)
                uow.commit()
        else:
            with runtime.unit_of_work() as uow:
                queue.finish(
                    token,
                    [row.id],
                    on=uow.session,
                    status="expanded",
                    expanded_at=datetime.now(UTC),
                    opted_out=len(refusing),
                )
                uow.commit()
            log.info("announcement %s: %d deliveries written, %d opted out", row.id, written, len(refusing))
    return len(rows)


def _sessions_of(uow: UnitOfWork, members: list[AudienceMember]) -> list[SessionView]:
    """The sessions of ``members`` (placeholders such as ``{session_title}``), in one query."""
    ids = sorted({m.session_id for m in members if m.session_id})
    return list(uow.session.scalars(select(SessionView).where(SessionView.session_id.in_(ids)))) if ids else []


def fan_out_loop(runtime: ServiceRuntime, stop: threading.Event, poll_interval: float = 1.0) -> None:
    """Expand due announcements until ``stop`` (the worker's announcement loop); polling finds scheduled
    ones when their time comes, also after a restart."""
    while not stop.is_set():
        try:
            claimed = expand_due(runtime)
        except Exception:
            log.exception("announcement fan-out failed; trying again")
            claimed = 0
        if claimed == 0:
            stop.wait(poll_interval)
