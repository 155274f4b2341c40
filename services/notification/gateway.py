"""SMS and WhatsApp through an HTTP gateway: what goes, how it is sent, and what the gateway tells us back.

**The gateway, as configured** (``shared/config.py``). Each message is one ``POST`` of JSON to
``LABINOV_SMS_GATEWAY_URL`` (WhatsApp to ``LABINOV_WHATSAPP_GATEWAY_URL`` when set) with
``Authorization: Bearer <LABINOV_SMS_GATEWAY_TOKEN>``, ``Idempotency-Key: <delivery id>`` and the body
``{"to": "+62812…", "text": "…", "channel": "sms"|"whatsapp", "reference": "<delivery id>"}`` — the four
names can be renamed for a gateway that wants others (``LABINOV_SMS_GATEWAY_FIELDS=to=msisdn,text=message``).
Any 2xx is accepted (an ``"id"`` in a JSON answer is kept as ``gateway_id``). The gateway later reports the
outcome to ``POST /notification/api/v1/gateway/status`` with the header ``X-Gateway-Secret:
<LABINOV_SMS_GATEWAY_SECRET>`` and ``{"reference": "<delivery id>", "status": "delivered"|"failed",
"error": "…"}`` (:func:`record_status`; ``undelivered`` and ``rejected`` are read as ``failed``, which makes a
message the gateway had accepted ``bounced``).

**What goes by SMS/WhatsApp** — rows of ``gateway_deliveries``, their own work queue (one per cause,
recipient and channel, the recipient being the person's e-mail address, their identity here; the phone is
the E.164 number the registration events carried, kept in the recipients projection):

* an announcement whose ``channels`` include ``sms`` or ``whatsapp``: the fan-out calls
  :func:`queue_announcement` with each batch of its audience — the organiser's subject and body with the
  placeholders filled, and the opt-out link of that channel; members without a phone or opted out of that
  channel are left out;
* a short variant of the transactional messages named in ``LABINOV_SMS_MESSAGES``
  (:func:`queue_transactional`, after the event's handler wrote its mail): the mail's subject and the
  event's manage link. Mail the hourly cap held back is not sent by SMS either.

**Sending** (:func:`send_due`, the worker's gateway loop; any number of them): claim due rows with a lease
(:class:`shared.workqueue.WorkQueue`), and for each: an announcement message to someone who has opted out
since is cancelled; take a token of the channel's bucket (:mod:`.channel_limits`: the rate holds across all
workers), renew the row's lease and mark it ``sending``, ``POST`` it, and record what the pure rule
:func:`services.notification.rules.after_gateway_failure` makes of a failure: a 429 (or a 503 with
``Retry-After``) waits as long as asked, charging nothing; a 5xx, 408, timeout or refused connection is
retried with backoff and jitter; any other 4xx fails at once, never retried. Each outcome is one transaction
with its attempt row and, when final, its ``notification.delivered`` / ``notification.failed`` event.

**The one window**, as for mail: the gateway accepted a message and the worker died before committing it.
The row stays ``sending`` until its lease ends and is sent again — with the same ``reference`` and
``Idempotency-Key``, so a gateway that honours either (most do) sends it once; the channel lets us tell.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from sqlalchemy import Engine, func, select, update

from services.notification import domain, rules, sending
from services.notification.attempts import apply_report, correlation_of, record_attempt
from services.notification.rules import Fail, GatewayFailure, RetryAt
from services.notification.tables import GATEWAY_CHANNELS, Delivery, GatewayDelivery, Recipient
from shared.backoff import equal_jitter
from shared.clock import utcnow
from shared.config import Settings
from shared.db import UnitOfWork, insert_or_update, new_id
from shared.errors import NotFound, RuleViolation
from shared.events import Event
from shared.runtime import ServiceRuntime
from shared.workqueue import WorkQueue

from .channel_limits import ChannelLimiter

log = logging.getLogger(__name__)

#: The wake-up channel's queue name: a transaction that queues a gateway message rings the gateway loops.
GATEWAY = "gateway"
SEND_LEASE = timedelta(minutes=2)
CONNECT_TIMEOUT, READ_TIMEOUT = 3.05, 10.0
#: Callback statuses, as gateways spell them, and what they make of a message.
#: A failure reported after the gateway accepted the message is a bounce (``bounced``): it was sent, it did not arrive.
CALLBACK_STATUSES = {"delivered": "delivered", "failed": "bounced", "undelivered": "bounced", "rejected": "bounced"}
gateway_deliveries = GatewayDelivery.__table__


# --- the transport ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayAnswer:
    """What the gateway said: its HTTP status (``None`` when it said nothing), ``Retry-After``, its id, an error."""

    status: int | None
    retry_after: str | None = None
    gateway_id: str | None = None
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class HttpGateway:
    """POSTs messages to the configured gateway over one keep-alive session (one per loop: not thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.urls = {
            "sms": settings.sms_gateway_url,
            "whatsapp": settings.whatsapp_gateway_url or settings.sms_gateway_url,
        }
        self.fields = dict(settings.sms_gateway_fields)
        self.session = requests.Session()
        if settings.sms_gateway_token:
            self.session.headers["Authorization"] = f"Bearer {settings.sms_gateway_token}"

    def configured(self, channel: str) -> bool:
        return bool(self.urls.get(channel))

    def send(self, channel: str, phone: str, text: str, reference: str) -> GatewayAnswer:
        body = rules.gateway_payload(self.fields, to=phone, text=text, channel=channel, reference=reference)
        try:
            response = self.session.post(
                self.urls[channel],
                json=body,
                headers={"Idempotency-Key": reference},
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return GatewayAnswer(None, error=f"{type(exc).__name__}: {exc}"[:2000])
        gateway_id = None
        if response.ok:
            try:
                answer = response.json()
                gateway_id = str(answer["id"]) if isinstance(answer, dict) and answer.get("id") is not None else None
            except ValueError:
                pass
            return GatewayAnswer(response.status_code, gateway_id=gateway_id)
        return GatewayAnswer(
            response.status_code,
            retry_after=response.headers.get("Retry-After"),
            error=f"HTTP {response.status_code}: {response.text[:500]}",
        )

    def close(self) -> None:
        self.session.close()


# --- writing messages -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayMessage:
    channel: str
    recipient: str
    phone: str
    template: str
    text: str


def queue_gateway_messages(
    uow: UnitOfWork,
    caused_by: str,
    correlation_id: str | None,
    batch: Sequence[GatewayMessage],
    announcement_id: str | None = None,
) -> int:
    """Write one gateway delivery per message, skipping any the same cause already wrote for that recipient and
    channel (``ON CONFLICT DO NOTHING``); returns how many were new. The gateway loops wake at commit."""
    if not batch:
        return 0
    now, due = datetime.now(UTC), utcnow()
    rows = [
        {
            "id": new_id(),
            "channel": message.channel,
            "recipient": message.recipient,
            "phone": message.phone,
            "template": message.template,
            "text": message.text,
            "caused_by": caused_by,
            "announcement_id": announcement_id,
            "correlation_id": correlation_id,
            "status": "queued",
            "attempts": 0,
            "next_attempt_at": due,
            "created_at": now,
        }
        for message in batch
    ]
    statement = insert_or_update(uow.session, gateway_deliveries).on_conflict_do_nothing(
        index_elements=["caused_by", "recipient", "channel"]
    )
    uow.notify_after_commit(GATEWAY)
    return uow.session.execute(statement, rows).rowcount or 0


def phones_of(uow: UnitOfWork, emails: Iterable[str]) -> dict[str, str]:
    """The phone the projection knows for each address that has one."""
    wanted = list(emails)
    if not wanted:
        return {}
    query = select(Recipient.email, Recipient.phone).where(Recipient.email.in_(wanted), Recipient.phone.is_not(None))
    return {email: phone for email, phone in uow.session.execute(query) if phone}


def queue_announcement(
    uow: UnitOfWork,
    runtime: ServiceRuntime,
    announcement: Any,
    members: Sequence[Any],
    values_of: Any,
) -> int:
    """The SMS/WhatsApp messages of one fan-out batch: for each gateway channel the announcement names, each
    member with a phone who has not opted out of that channel. ``values_of(member)`` gives the placeholders."""
    channels = [c for c in json.loads(announcement.channels) if c in GATEWAY_CHANNELS]
    if not channels or not members:
        return 0
    phones = phones_of(uow, [m.email for m in members])
    stop_link = domain.unsubscribe_links(runtime)
    written = 0
    for channel in channels:
        refusing = domain.opted_out(uow.session, list(phones), channel)
        batch = []
        for member in members:
            if member.email not in phones or member.email in refusing:
                continue
            values = values_of(member)
            subject = rules.fill_placeholders(announcement.subject, values)
            body = rules.fill_placeholders(announcement.body, values)
            text = f"{subject}\n{body}\n\nStop: {stop_link(member.email, channel)}"
            batch.append(GatewayMessage(channel, member.email, phones[member.email], "announcement", text))
        written += queue_gateway_messages(
            uow, announcement.id, announcement.correlation_id, batch, announcement_id=announcement.id
        )
    return written


def queue_transactional(uow: UnitOfWork, event: Event, kinds: Sequence[str]) -> int:
    """A short SMS beside each mail of the kinds in ``kinds`` (``LABINOV_SMS_MESSAGES``) that ``event`` caused,
    to recipients with a phone; mail held back by the hourly cap gets no SMS either."""
    if not kinds:
        return 0
    d = Delivery.__table__.c
    mails = uow.session.execute(
        select(d.recipient, d.template, d.subject).where(
            d.caused_by == event.id, d.template.in_(list(kinds)), d.status != "held"
        )
    ).all()
    if not mails:
        return 0
    phones = phones_of(uow, {mail.recipient for mail in mails})
    link = event.data.get("manage_url") if isinstance(event.data, Mapping) else None
    batch = [
        GatewayMessage(
            "sms", mail.recipient, phones[mail.recipient], mail.template, rules.short_text(mail.subject, link)
        )
        for mail in mails
        if mail.recipient in phones
    ]
    return queue_gateway_messages(uow, event.id, event.correlationid, batch)


# --- sending ----------------------------------------------------------------------------------------------------


def gateway_queue(engine: Engine) -> WorkQueue:
    c = gateway_deliveries.c
    return WorkQueue(
        engine,
        gateway_deliveries,
        pending=(c.status.in_(("queued", "sending")),),
        due_at=c.next_attempt_at,
        order_by=(c.next_attempt_at,),
        lease=SEND_LEASE,
    )


def send_due(
    runtime: ServiceRuntime,
    transport: HttpGateway,
    limiter: ChannelLimiter,
    stop: threading.Event | None = None,
    batch_size: int = 20,
) -> int:
    """Send the gateway messages that are due (see the module docstring); returns how many were claimed."""
    queue = gateway_queue(runtime.engine)
    token, rows = queue.claim(batch_size)
    for index, row in enumerate(rows):
        if row.announcement_id and _opted_out_since(runtime, queue, token, row):
            continue
        if not limiter.take(row.channel, stop, longest=SEND_LEASE.total_seconds() / 4):
            queue.release(token, [r.id for r in rows[index:]])  # stopping, or the bucket is starved: give back
            break
        if not _start_sending(runtime, queue, token, row.id):
            log.warning("gateway delivery %s skipped: its lease ran out and another worker has claimed it", row.id)
            continue
        if not transport.configured(row.channel):
            answer = GatewayAnswer(400, error=f"no {row.channel} gateway configured (LABINOV_SMS_GATEWAY_URL)")
        else:
            answer = transport.send(row.channel, row.phone, row.text, row.id)
        if answer.accepted:
            _finish(runtime, queue, token, row, "sent", row.attempts + 1, gateway_id=answer.gateway_id)
        else:
            _after_failure(runtime, queue, token, row, answer)
    return len(rows)


def _opted_out_since(runtime: ServiceRuntime, queue: WorkQueue, token: str, row) -> bool:
    with runtime.unit_of_work() as uow:
        if not domain.opted_out(uow.session, [row.recipient], row.channel):
            return False
        if queue.finish(token, [row.id], on=uow.session, status="cancelled", last_error="opted out"):
            record_attempt(uow, row.id, "cancelled", "opted out")
        uow.commit()
    return True


def _start_sending(runtime: ServiceRuntime, queue: WorkQueue, token: str, row_id: str) -> bool:
    statement = queue.guarded(token, [row_id]).values(claimed_until=utcnow() + queue.lease, status="sending")
    with runtime.engine.begin() as connection:
        return connection.execute(statement).rowcount == 1


def _after_failure(runtime: ServiceRuntime, queue: WorkQueue, token: str, row, answer: GatewayAnswer) -> None:
    now = datetime.now(UTC)
    retry_after = rules.retry_after_of(answer.retry_after, now)
    failure = rules.gateway_failure_of(answer.status, retry_after)
    error = answer.error or f"HTTP {answer.status}"
    decision = rules.after_gateway_failure(
        failure, attempts=row.attempts, created_at=row.created_at, now=now, retry_after=retry_after, jitter=equal_jitter
    )
    match decision:
        case RetryAt(at=at, attempts=attempts):
            outcome = "wait" if failure is GatewayFailure.RATE_LIMITED else "retry"
            log.warning("gateway delivery %s: %s, again at %s", row.id, error, at.isoformat())
            with runtime.unit_of_work() as uow:
                if queue.postpone(
                    token, row.id, at, on=uow.session, status="queued", attempts=attempts, last_error=error
                ):
                    record_attempt(uow, row.id, outcome, error)
                uow.commit()
        case Fail(reason=reason, attempts=attempts):
            log.warning("gateway delivery %s failed for good (%s): %s", row.id, reason.value, error)
            _finish(runtime, queue, token, row, "failed", attempts, error=error)


def _finish(
    runtime: ServiceRuntime,
    queue: WorkQueue,
    token: str,
    row,
    status: str,
    attempts: int,
    error: str | None = None,
    gateway_id: str | None = None,
) -> None:
    """Mark the message sent (accepted by the gateway) or failed, with its attempt and event, in one transaction."""
    with correlation_of(row.correlation_id), runtime.unit_of_work() as uow:
        values: dict[str, Any] = {"status": status, "attempts": attempts, "last_error": error}
        if status == "sent":
            values.update(sent_at=datetime.now(UTC), gateway_id=gateway_id)
        if queue.finish(token, [row.id], on=uow.session, **values):
            record_attempt(uow, row.id, status, error)
            _publish(uow, row, status, error)
        elif gateway_id:  # its status callback was quicker and told the outcome (record_status); keep the id
            c = gateway_deliveries.c
            uow.session.execute(
                update(gateway_deliveries)
                .where(c.id == row.id, c.claim_token == token, c.gateway_id.is_(None))
                .values(gateway_id=gateway_id)
            )
        uow.commit()


def _publish(uow: UnitOfWork, row, status: str, error: str | None) -> None:
    uow.publish(
        "notification.delivered" if status in ("sent", "delivered") else "notification.failed",
        sending.outcome_event_data(row, error),
        subject=row.id,
    )


def gateway_loop(runtime: ServiceRuntime, stop: threading.Event, poll_interval: float = 1.0) -> None:
    """Send due SMS/WhatsApp messages until ``stop`` (the worker's gateway loop), woken when one is queued."""
    from shared.worker import work_loop

    transport = HttpGateway(runtime.settings)
    limiter = ChannelLimiter(runtime.engine, runtime.settings.channel_rates)
    try:
        work_loop(runtime, stop, GATEWAY, lambda: send_due(runtime, transport, limiter, stop), poll_interval)
    finally:
        transport.close()


# --- the gateway's status callback ------------------------------------------------------------------------------


def record_status(uow: UnitOfWork, reference: str, reported: str, error: str | None = None) -> GatewayDelivery:
    """The gateway says what became of message ``reference``: ``delivered``, or ``failed`` (also spelled
    ``undelivered``/``rejected``) after it had accepted the message, which makes it ``bounced``.

    Every outcome is told once, by whoever records it first:

    * a report about a message still ``sending`` — the gateway was quicker than the sender's commit — is the
      outcome: ``delivered`` is recorded with its attempt and ``notification.delivered`` here, and the sender's
      own ``_finish`` then finds the row no longer pending (its guard) and writes nothing, so the event is
      neither lost nor doubled;
    * ``delivered`` about a ``sent`` message adds only ``delivered_at`` (the sender told
      ``notification.delivered`` when the gateway accepted it);
    * a failure about a ``sending`` or ``sent`` message makes it ``bounced``, told as ``notification.failed``;
    * a repeat, or a report about a message already final (delivered, bounced, failed, cancelled), changes
      nothing.

    The change is a compare-and-set (:func:`.attempts.apply_report`: ``UPDATE … WHERE status = <the state
    read>``, the row read ``FOR UPDATE`` on PostgreSQL), so the state it changed from is known: of two reports racing (the gateway retries its
    callback), one changes the row and the other changes nothing, and a sender committing ``sent`` meanwhile
    makes the report apply to ``sent`` (re-read and tried again) instead of being lost."""
    status = CALLBACK_STATUSES.get(reported.lower())
    if status is None:
        raise RuleViolation("Unknown status.", {"status": [f"Must be one of: {', '.join(CALLBACK_STATUSES)}."]})
    row = uow.session.get(GatewayDelivery, reference, with_for_update=True)
    if row is None:
        raise NotFound(f"No gateway delivery {reference}.")
    c = gateway_deliveries.c
    now = datetime.now(UTC)
    values: dict[str, Any] = {"status": status, "claimed_until": None}
    if status == "delivered":
        values.update(delivered_at=now, sent_at=func.coalesce(c.sent_at, now))
    else:
        values["last_error"] = (error or "the gateway reported a failure")[:2000]
    before = apply_report(uow, row, ("sending", "sent"), values)
    if before:
        record_attempt(uow, reference, status, values.get("last_error"))
        with correlation_of(row.correlation_id):
            if status == "bounced":
                _publish(uow, row, "failed", values["last_error"])
            elif before == "sending":
                _publish(uow, row, "delivered", None)
    return row


def counts_of_announcement(uow: UnitOfWork, announcement_id: str) -> dict[str, int]:
    """The announcement's SMS/WhatsApp messages by state, for its progress beside the mail."""

    c = gateway_deliveries.c
    query = select(c.status, func.count()).where(c.announcement_id == announcement_id).group_by(c.status)
    return dict(uow.session.execute(query).tuples().all())
