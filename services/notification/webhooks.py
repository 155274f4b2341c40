"""Outgoing webhooks: an organiser's URL hears chosen events, signed per the Standard Webhooks specification.

**Registering.** ``POST /notification/api/v1/webhooks`` with ``{"url", "event_types"}``: every event type the
notification service consumes may be chosen (:data:`EVENT_TYPES`). The answer carries the endpoint's secret, a
Standard Webhooks key (``whsec_`` + base64 of 32 random bytes) — shown this once, kept to sign.

**Where a webhook may point** (:func:`check_url`): ``https://`` only, to a host whose every address is on the
public internet — no loopback, private, link-local (the cloud metadata service), reserved or multicast
address, so an organiser's token cannot be used to make the worker call into the suite's own network
(server-side request forgery). ``LABINOV_WEBHOOK_ALLOW_LOCAL=true`` (development and tests) also allows
``http://`` and local addresses. It is checked when the webhook is made, and again before **every** attempt,
against DNS rebinding: the name is resolved, every address checked, and the request then goes to the checked
address itself (the connection is pinned to it, the ``Host`` header and the TLS server name stay the URL's), so
a name that resolves differently a moment later cannot slip past. Redirects are not followed.

**Queueing.** The event handlers call :func:`queue_for_event` in the handler's transaction: one
``webhook_deliveries`` row per active webhook subscribed to the event's type, ``ON CONFLICT DO NOTHING`` on
the unique ``(event_id, webhook_id)``, so a redelivered event or two racing workers queue it once. On
PostgreSQL that is one ``INSERT … SELECT`` from ``webhooks`` (:func:`deliveries_of_event`: the subscription
is matched in SQL, so there is no lookup in Python and no cache to invalidate when an organiser adds or
switches off a webhook — the statement reads the table as the transaction sees it), whose ``RETURNING``
rings the webhook loops; a registration event runs it as a part of its one statement
(:func:`services.notification.domain.notify_registration`). SQLite reads the subscriptions and inserts.

**What a webhook is sent** (:func:`payload_of`): the event's type, time, id and data — without
``manage_url``, the participant's own link, which carries their secret token: it is for the participant's
mail, never for an organiser's endpoint.

**Sending** (:func:`send_due`, the worker's webhook loop, any number of them): claim due rows with a lease
(:class:`shared.workqueue.WorkQueue`); for each, renew the lease, resolve and check the host, and ``POST`` the
JSON body ``{"type", "timestamp", "data", "event_id"}`` with the headers ``webhook-id`` (the delivery's id, the
same on every retry, so the receiver can recognise a repeat), ``webhook-timestamp`` (seconds, this attempt's)
and ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``. A 2xx is success; anything else
— another status, a timeout, a refused address — is a failed attempt, retried with backoff and jitter
(:func:`services.notification.rules.after_webhook_failure`) until the delivery fails. Every attempt is kept in
``delivery_attempts`` with its status code or error (``GET …/webhooks/{id}/deliveries``).

**Switching off.** The endpoint counts its failed attempts in a row (one atomic ``UPDATE … SET n = n + 1``, so
workers failing at once all count) and since when; a success resets both. After 10 failures in a row over at
least a day, or at once on ``410 Gone`` (:func:`services.notification.rules.webhook_disable_reason`), it is
switched off with the reason; its remaining deliveries are cancelled as they come up.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import Engine, Insert, String, bindparam, case, cast, func, literal, literal_column, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as postgresql_insert

from services.notification import rules
from services.notification.attempts import record_attempt
from services.notification.rules import Fail, RetryAt
from services.notification.tables import DeliveryAttempt, Webhook, WebhookDelivery
from shared.backoff import equal_jitter
from shared.clock import utcnow
from shared.db import UnitOfWork, insert_or_update
from shared.errors import NotFound, RuleViolation
from shared.events import Event
from shared.messaging import wakeup
from shared.messaging.topology import SUBSCRIPTIONS
from shared.runtime import ServiceRuntime
from shared.workqueue import WorkQueue

log = logging.getLogger(__name__)

#: Every event type an organiser may subscribe a webhook to: those this service consumes.
EVENT_TYPES: tuple[str, ...] = SUBSCRIPTIONS["notification"]
#: The wake-up channel's queue name: a transaction that queues a webhook delivery rings the webhook loops.
WEBHOOKS = "webhooks"
SEND_LEASE = timedelta(minutes=1)
CONNECT_TIMEOUT, READ_TIMEOUT = 3.05, 10.0
webhooks = Webhook.__table__
webhook_deliveries = WebhookDelivery.__table__


# --- where a webhook may point ---------------------------------------------------------------------------------


class RefusedUrl(ValueError):
    """A webhook URL that may not be called, and why."""


def resolve(url: str, allow_local: bool) -> tuple[str, list[str]]:
    """The URL's host and its addresses, each checked (:func:`services.notification.rules.refused_address`);
    raises :class:`RefusedUrl` saying why not."""
    parts = urlsplit(url)
    allowed_schemes = ("https", "http") if allow_local else ("https",)
    if parts.scheme not in allowed_schemes:
        raise RefusedUrl(
            "Only https:// URLs are accepted." if not allow_local else "Only http:// and https:// URLs are accepted."
        )
    host = parts.hostname
    if not host:
        raise RefusedUrl("The URL names no host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise RefusedUrl(f"The host {host} cannot be resolved: {exc}.") from None
    addresses = sorted({info[4][0] for info in found})
    for address in addresses:
        refusal = rules.refused_address(address, allow_local)
        if refusal:
            raise RefusedUrl(f"The host {host} resolves to {refusal}; webhooks go only to the public internet.")
    if not addresses:
        raise RefusedUrl(f"The host {host} has no address.")
    return host, addresses


def check_url(url: str, allow_local: bool) -> None:
    """Refuse (422 naming ``url``) a webhook URL that may not be called (see the module docstring)."""
    try:
        resolve(url, allow_local)
    except RefusedUrl as refusal:
        raise RuleViolation("The webhook URL is refused.", {"url": [str(refusal)]}) from None


# --- organisers' webhooks --------------------------------------------------------------------------------------


def create(uow: UnitOfWork, data: dict[str, Any], organiser: str, allow_local: bool) -> Webhook:
    """A new webhook for ``data["event_types"]`` (each one this service consumes), to a URL that may be called."""
    unknown = [t for t in data["event_types"] if t not in EVENT_TYPES]
    if unknown:
        raise RuleViolation(
            "Unknown event types.",
            {"event_types": [f"Unknown event type {t}; choose among: {', '.join(EVENT_TYPES)}." for t in unknown]},
        )
    check_url(data["url"], allow_local)
    webhook = Webhook(
        url=data["url"],
        event_types=json.dumps(sorted(set(data["event_types"]))),
        secret=rules.new_webhook_secret(os.urandom(32)),
        active=True,
        consecutive_failures=0,
        created_by=organiser,
        created_at=datetime.now(UTC),
    )
    uow.session.add(webhook)
    uow.flush()
    return webhook


def get(uow: UnitOfWork, webhook_id: str) -> Webhook:
    webhook = uow.session.get(Webhook, webhook_id)
    if webhook is None:
        raise NotFound(f"No webhook {webhook_id}.")
    return webhook


def view(webhook: Webhook, with_secret: bool = False) -> dict[str, Any]:
    shown = {
        "id": webhook.id,
        "url": webhook.url,
        "event_types": json.loads(webhook.event_types),
        "active": webhook.active,
        "consecutive_failures": webhook.consecutive_failures,
        "disabled_at": webhook.disabled_at,
        "disabled_reason": webhook.disabled_reason,
        "created_at": webhook.created_at,
    }
    if with_secret:
        shown["secret"] = webhook.secret
    return shown


def switch(uow: UnitOfWork, webhook_id: str, active: bool, allow_local: bool) -> Webhook:
    """An organiser switches a webhook on — also one switched off after repeated failure, which starts counting
    failures afresh, its URL checked again as when it was made — or off (deliveries still queued for it are
    then cancelled when their turn comes, by the sender's own check). Switching to the state it is in changes
    nothing."""
    webhook = uow.session.get(Webhook, webhook_id, with_for_update=True)
    if webhook is None:
        raise NotFound(f"No webhook {webhook_id}.")
    if webhook.active == active:
        return webhook
    if active:
        check_url(webhook.url, allow_local)
        webhook.active, webhook.consecutive_failures, webhook.failing_since = True, 0, None
        webhook.disabled_at, webhook.disabled_reason = None, None
    else:
        webhook.active, webhook.disabled_at = False, datetime.now(UTC)
        webhook.disabled_reason = "switched off by an organiser"
    uow.flush()
    return webhook


def delete(uow: UnitOfWork, webhook_id: str) -> None:
    """Remove a webhook with its deliveries and their attempts. A delivery a sender holds at this moment may
    still go out once (its outcome then finds no row: the work queue's guard); nothing else is sent."""
    if uow.session.get(Webhook, webhook_id, with_for_update=True) is None:
        raise NotFound(f"No webhook {webhook_id}.")
    d = webhook_deliveries.c
    of_webhook = select(d.id).where(d.webhook_id == webhook_id).scalar_subquery()
    attempts = DeliveryAttempt.__table__
    uow.session.execute(sql_delete(attempts).where(attempts.c.delivery_id.in_(of_webhook)))
    uow.session.execute(sql_delete(webhook_deliveries).where(d.webhook_id == webhook_id))
    uow.session.execute(sql_delete(webhooks).where(webhooks.c.id == webhook_id))


def list_webhooks(uow: UnitOfWork, limit: int = 100, offset: int = 0) -> list[Webhook]:
    query = select(Webhook).order_by(Webhook.created_at.desc(), Webhook.id).limit(limit).offset(offset)
    return list(uow.session.scalars(query))


def deliveries_of(uow: UnitOfWork, webhook_id: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """The webhook's deliveries, newest first, each with every attempt (oldest first)."""
    get(uow, webhook_id)
    found = list(
        uow.session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == webhook_id)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
            .limit(limit)
            .offset(offset)
        )
    )
    attempts: dict[str, list[DeliveryAttempt]] = {d.id: [] for d in found}
    if found:
        query = select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(list(attempts)))
        for attempt in uow.session.scalars(query.order_by(DeliveryAttempt.id)):
            attempts[attempt.delivery_id].append(attempt)
    return [
        {
            "id": d.id,
            "event_id": d.event_id,
            "event_type": d.event_type,
            "status": d.status,
            "attempts": d.attempts,
            "last_error": d.last_error,
            "next_attempt_at": d.next_attempt_at.replace(tzinfo=UTC) if d.status == "queued" else None,
            "created_at": d.created_at,
            "sent_at": d.sent_at,
            "tries": [{"at": a.at, "outcome": a.outcome, "error": a.error} for a in attempts[d.id]],
        }
        for d in found
    ]


# --- queueing --------------------------------------------------------------------------------------------------


def _json_default(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{value!r} is not JSON serialisable")


#: Fields of an event's data that no webhook is sent: the participant's manage link carries their token.
PRIVATE_FIELDS = frozenset({"manage_url"})


def payload_of(event: Event) -> str:
    """The body every subscribed webhook gets for ``event`` (Standard Webhooks' ``type``/``timestamp``/``data``),
    without the participant's private fields (:data:`PRIVATE_FIELDS`)."""
    data = event.data
    if isinstance(data, dict) and not PRIVATE_FIELDS.isdisjoint(data):
        data = {key: value for key, value in data.items() if key not in PRIVATE_FIELDS}
    body = {"type": event.type, "timestamp": event.time.isoformat(), "event_id": event.id, "data": data}
    return json.dumps(body, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def queue_for_event(uow: UnitOfWork, event: Event) -> int:
    """One delivery of ``event`` per active webhook subscribed to its type, in the handler's transaction; how many
    were new (a redelivered event writes none). One statement on PostgreSQL (see the module docstring)."""
    if uow.session.get_bind().dialect.name == "postgresql":
        statement = deliveries_of_event(wakeup.channel(uow.source.strip("/"), WEBHOOKS))
        return len(uow.session.execute(statement, delivery_values(event)).all())
    subscribed = [
        webhook_id
        for webhook_id, event_types in uow.session.execute(
            select(webhooks.c.id, webhooks.c.event_types).where(webhooks.c.active.is_(True))
        )
        if event.type in json.loads(event_types)
    ]
    if not subscribed:
        return 0
    payload, now, due = payload_of(event), datetime.now(UTC), utcnow()
    rows = [
        {
            "id": f"msg_{uuid.uuid4().hex}",
            "webhook_id": webhook_id,
            "event_id": event.id,
            "event_type": event.type,
            "payload": payload,
            "status": "queued",
            "attempts": 0,
            "next_attempt_at": due,
            "created_at": now,
        }
        for webhook_id in subscribed
    ]
    statement = insert_or_update(uow.session, webhook_deliveries).on_conflict_do_nothing(
        index_elements=["event_id", "webhook_id"]
    )
    uow.notify_after_commit(WEBHOOKS)
    return uow.session.execute(statement, rows).rowcount or 0


def delivery_values(event: Event) -> dict[str, Any]:
    """The values of :func:`deliveries_of_event` for ``event`` (its bind parameters are named ``w_…``)."""
    return {
        "w_event_id": event.id,
        "w_event_type": event.type,
        "w_payload": payload_of(event),
        "w_next_attempt_at": utcnow(),
        "w_created_at": datetime.now(UTC),
    }


@functools.cache
def deliveries_of_event(channel: str) -> Insert:
    """PostgreSQL: ``INSERT INTO webhook_deliveries … SELECT … FROM webhooks WHERE active AND event_types @>
    [type]`` — one row per subscribed webhook, ids made by the database (``msg_`` + a random UUID's hex, as in
    Python), ``ON CONFLICT DO NOTHING`` on ``(event_id, webhook_id)``, its ``RETURNING`` ringing ``channel``
    (``pg_notify``, sent at commit, only if a row was written). Made once per channel; also a CTE of a
    registration event's one statement, since PostgreSQL runs a data-modifying CTE to completion, ``RETURNING``
    included, whether or not it is read."""
    w, d = webhooks.c, webhook_deliveries.c
    event_type = cast(bindparam("w_event_type", type_=String), String)
    subscribed = select(
        (literal("msg_") + func.replace(cast(func.gen_random_uuid(), String), "-", "")).label("id"),
        w.id,
        bindparam("w_event_id", type_=d.event_id.type),
        event_type,
        bindparam("w_payload", type_=d.payload.type),
        literal("queued"),
        literal(0),
        bindparam("w_next_attempt_at", type_=d.next_attempt_at.type),
        bindparam("w_created_at", type_=d.created_at.type),
    ).where(w.active.is_(True), cast(w.event_types, JSONB).contains(func.jsonb_build_array(event_type)))
    columns = ["id", "webhook_id", "event_id", "event_type", "payload", "status", "attempts", "next_attempt_at"]
    statement = postgresql_insert(webhook_deliveries).from_select([*columns, "created_at"], subscribed)
    statement = statement.on_conflict_do_nothing(index_elements=["event_id", "webhook_id"])
    return statement.returning(literal_column(wakeup.notify_statement(channel)).label("rung"))


# --- sending ---------------------------------------------------------------------------------------------------


def webhook_queue(engine: Engine) -> WorkQueue:
    c = webhook_deliveries.c
    return WorkQueue(
        engine,
        webhook_deliveries,
        pending=(c.status.in_(("queued", "sending")),),
        due_at=c.next_attempt_at,
        order_by=(c.next_attempt_at,),
        lease=SEND_LEASE,
    )


class _PinnedAdapter(HTTPAdapter):
    """Connects to a checked address while TLS still verifies (and sends SNI for) the URL's own host name."""

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = self._hostname
        kwargs["assert_hostname"] = self._hostname
        super().init_poolmanager(*args, **kwargs)


def post_signed(url: str, secret: str, message_id: str, payload: str, allow_local: bool) -> tuple[int | None, str]:
    """One attempt: resolve and check the host now, POST the signed body to the checked address; the status
    (``None`` when none came) and what to record."""
    try:
        host, addresses = resolve(url, allow_local)
    except RefusedUrl as refusal:
        return None, f"refused: {refusal}"
    parts = urlsplit(url)
    address = addresses[0]
    literal = (
        f"[{address}]" if isinstance(ipaddress.ip_address(address.split("%")[0]), ipaddress.IPv6Address) else address
    )
    netloc = literal + (f":{parts.port}" if parts.port else "")
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    body = payload.encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "Host": parts.netloc.rsplit("@", 1)[-1],
        "User-Agent": "Labinov-Webhooks/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": rules.webhook_signature(secret, message_id, timestamp, body),
    }
    with requests.Session() as session:
        session.trust_env = False  # never through a proxy that would resolve the name again
        session.mount(f"{parts.scheme}://", _PinnedAdapter(host))
        try:
            response = session.post(
                pinned, data=body, headers=headers, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), allow_redirects=False
            )
        except requests.RequestException as exc:
            return None, f"{type(exc).__name__}: {exc}"[:2000]
    return response.status_code, f"HTTP {response.status_code}"


def send_due(runtime: ServiceRuntime, allow_local: bool | None = None, batch_size: int = 20) -> int:
    """Send the webhook deliveries that are due (see the module docstring); how many were claimed."""
    allow_local = runtime.settings.webhook_allow_local if allow_local is None else allow_local
    queue = webhook_queue(runtime.engine)
    token, rows = queue.claim(batch_size)
    for row in rows:
        with runtime.reading() as uow:
            webhook = uow.session.get(Webhook, row.webhook_id)
            target = (webhook.url, webhook.secret, webhook.active) if webhook else None
        if target is None or not target[2]:
            with runtime.unit_of_work() as uow:
                if queue.finish(token, [row.id], on=uow.session, status="cancelled", last_error="webhook switched off"):
                    record_attempt(uow, row.id, "cancelled", "webhook switched off")
                uow.commit()
            continue
        statement = queue.guarded(token, [row.id]).values(claimed_until=utcnow() + queue.lease, status="sending")
        with runtime.engine.begin() as connection:
            if connection.execute(statement).rowcount != 1:
                continue  # the lease ran out and another worker holds it now
        status, outcome = post_signed(target[0], target[1], row.id, row.payload, allow_local)
        if status is not None and 200 <= status < 300:
            _succeeded(runtime, queue, token, row, outcome)
        else:
            _failed(runtime, queue, token, row, outcome, gone=status == 410)
    return len(rows)


def _succeeded(runtime: ServiceRuntime, queue: WorkQueue, token: str, row, outcome: str) -> None:
    with runtime.unit_of_work() as uow:
        if queue.finish(
            token, [row.id], on=uow.session, status="sent", attempts=row.attempts + 1, sent_at=datetime.now(UTC)
        ):
            record_attempt(uow, row.id, "sent", outcome)
            uow.session.execute(
                update(webhooks)
                .where(webhooks.c.id == row.webhook_id)
                .values(consecutive_failures=0, failing_since=None)
            )
        uow.commit()


def _failed(runtime: ServiceRuntime, queue: WorkQueue, token: str, row, error: str, gone: bool) -> None:
    """Record a failed attempt: the delivery retries or fails; the endpoint counts it and may be switched off."""
    now = datetime.now(UTC)
    decision = rules.after_webhook_failure(attempts=row.attempts, now=now, jitter=equal_jitter)
    with runtime.unit_of_work() as uow:
        c = webhooks.c
        counted = uow.session.execute(
            update(webhooks)
            .where(c.id == row.webhook_id)
            .values(
                consecutive_failures=c.consecutive_failures + 1,
                failing_since=case((c.failing_since.is_(None), now), else_=c.failing_since),
            )
            .returning(c.consecutive_failures, c.failing_since)
        ).first()
        reason = None
        if counted is not None:
            failing_since = counted.failing_since
            if failing_since is not None and failing_since.tzinfo is None:
                failing_since = failing_since.replace(tzinfo=UTC)
            reason = rules.webhook_disable_reason(
                consecutive_failures=counted.consecutive_failures, failing_since=failing_since, now=now, gone=gone
            )
        if reason:
            uow.session.execute(
                update(webhooks)
                .where(c.id == row.webhook_id, c.active.is_(True))
                .values(active=False, disabled_at=now, disabled_reason=reason)
            )
            log.warning("webhook %s switched off: %s", row.webhook_id, reason)
        match decision:
            case RetryAt(at=at, attempts=attempts) if not reason:
                if queue.postpone(
                    token, row.id, at, on=uow.session, status="queued", attempts=attempts, last_error=error
                ):
                    record_attempt(uow, row.id, "retry", error)
            case RetryAt(attempts=attempts) | Fail(attempts=attempts):
                final = error if not reason else f"{error}; webhook switched off: {reason}"
                if queue.finish(token, [row.id], on=uow.session, status="failed", attempts=attempts, last_error=final):
                    record_attempt(uow, row.id, "failed", final)
        uow.commit()


def webhook_loop(runtime: ServiceRuntime, stop: threading.Event, poll_interval: float = 1.0) -> None:
    """Send due webhook deliveries until ``stop`` (the worker's webhook loop), woken when one is queued."""
    from shared.worker import work_loop

    work_loop(runtime, stop, WEBHOOKS, lambda: send_due(runtime), poll_interval)
