"""SMS and WhatsApp through a real local HTTP gateway, on PostgreSQL and SQLite: an announcement's messages get
through a gateway that answers 429/503 for a while, each exactly once; a permanent refusal fails and is never
retried; the status callback needs the shared secret; the channel's rate holds across two competing loops."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select, update

from services.notification import announcements, gateway, rules
from services.notification.channel_limits import ChannelLimiter
from services.notification.handlers import HANDLERS
from services.notification.tables import DeliveryAttempt, GatewayDelivery
from shared.backoff import Backoff
from shared.config import load_settings
from shared.events import make_event, parse_event
from shared.migrations import upgrade

SECRET = "gateway-callback-secret-123"


class LocalGateway:
    """An HTTP gateway in a thread: records every request; ``script(body, n)`` decides each answer."""

    def __init__(self, script=None):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.script = script or (lambda body, n: (200, {}, {"id": f"gw-{n}"}))
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    n = len(outer.requests)
                    outer.requests.append({"body": body, "headers": dict(self.headers), "at": time.monotonic()})
                status, headers, answer = outer.script(body, n)
                with outer.lock:
                    outer.requests[n]["status"] = status
                data = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/send"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> Counter:
        return Counter(r["body"]["ref"] for r in self.requests if r.get("status") == 200)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def local_gateway():
    made = []

    def make(script=None):
        made.append(LocalGateway(script))
        return made[-1]

    yield make
    for server in made:
        server.close()


def runtime_with(tmp_path, database_url, **env):
    from services.notification.bootstrap import bootstrap

    values = {"LABINOV_DATA_DIR": str(tmp_path), **env}
    if database_url:
        values["LABINOV_NOTIFICATION_DATABASE_URL"] = database_url
    runtime = bootstrap(load_settings("notification", values))
    upgrade(runtime)
    return runtime


def gateway_env(gateway_url: str, rate: str = "1000/second") -> dict:
    return {
        "LABINOV_SMS_GATEWAY_URL": gateway_url,
        "LABINOV_SMS_GATEWAY_TOKEN": "gw-token",
        "LABINOV_SMS_GATEWAY_SECRET": SECRET,
        "LABINOV_SMS_GATEWAY_FIELDS": "to=msisdn,reference=ref",
        "LABINOV_SMS_RATE": rate,
        "LABINOV_WHATSAPP_RATE": rate,
    }


def register(runtime, i: int, phone: str | None = None, status: str = "confirmed"):
    event_type = {"confirmed": "registration.confirmed", "cancelled": "registration.cancelled"}[status]
    data = {
        "registration_id": f"r-{i}",
        "session_id": "s-1",
        "programme_id": "prog-1",
        "session_title": "Klinik Inovasi",
        "session_starts_at": "2027-03-01T01:00:00+00:00",
        "session_location": "Aula",
        "status": status,
        "name": f"Peserta {i}",
        "nip": f"198503152010011{i:03d}",
        "email": f"peserta{i}@kaltaraprov.go.id",
        "phone": phone or f"+62812000{i:05d}",
        "opd": "Dinas Kominfo",
    }
    event = parse_event(make_event(event_type, data, source="/registration", correlation_id=f"req-{i}"))
    with runtime.unit_of_work() as uow:
        HANDLERS[event_type](uow, event)
        uow.commit()
    return event


def announce_by(runtime, channels: list[str], body: str = "Yth. {name}, sampai jumpa di {session_title}.") -> str:
    data = {
        "subject": "Info",
        "body": body,
        "channels": channels,
        "audience": {"session_id": "s-1"},
        "send_at": None,
    }
    with runtime.unit_of_work() as uow:
        created = announcements.create(uow, data, "panitia@kaltaraprov.go.id", "req-a")
        uow.commit()
    while announcements.expand_due(runtime):
        pass
    return created.id


def gateway_rows(runtime) -> list[GatewayDelivery]:
    with runtime.reading() as uow:
        return list(uow.session.scalars(select(GatewayDelivery).order_by(GatewayDelivery.recipient)))


def send_until_settled(runtime, transport, limiter, seconds: float = 20.0) -> None:
    """Run the gateway loop's work until no message is left queued or sending."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        gateway.send_due(runtime, transport, limiter)
        if not [row for row in gateway_rows(runtime) if row.status in ("queued", "sending")]:
            return
        time.sleep(0.05)
    raise AssertionError(f"still unsent: {[(r.recipient, r.status, r.next_attempt_at) for r in gateway_rows(runtime)]}")


def due_now(runtime) -> None:
    """Make every message due now, as time passing would."""
    from shared.clock import utcnow

    with runtime.engine.begin() as connection:
        connection.execute(update(GatewayDelivery.__table__).values(next_attempt_at=utcnow() - timedelta(seconds=1)))


def test_an_announcement_by_sms_and_whatsapp_reaches_everyone_once_through_a_gateway_answering_429_and_503_for_a_while(
    tmp_path, database_url, local_gateway, monkeypatch
):
    monkeypatch.setattr(
        rules, "GATEWAY_RETRY", Backoff(base=timedelta(milliseconds=100), factor=2, cap=timedelta(seconds=1))
    )

    def busy_for_a_while(body, n):
        if n < 4:
            return 429, {"Retry-After": "1"}, {"error": "slow down"}
        if n < 8:
            return 503, {}, {"error": "maintenance"}
        return 200, {}, {"id": f"gw-{n}"}

    server = local_gateway(busy_for_a_while)
    runtime = runtime_with(tmp_path, database_url, **gateway_env(server.url))
    for i in range(1, 6):
        register(runtime, i)
    announcement_id = announce_by(runtime, ["email", "sms", "whatsapp"])

    rows = gateway_rows(runtime)
    assert len(rows) == 10 and Counter(r.channel for r in rows) == {"sms": 5, "whatsapp": 5}
    transport = gateway.HttpGateway(runtime.settings)
    send_until_settled(runtime, transport, ChannelLimiter(runtime.engine, runtime.settings.channel_rates))

    rows = gateway_rows(runtime)
    assert {r.status for r in rows} == {"sent"}
    assert server.accepted() == Counter({r.id: 1 for r in rows}), "every message accepted exactly once"
    first = server.requests[-1]
    assert first["headers"]["Authorization"] == "Bearer gw-token"
    assert first["headers"]["Idempotency-Key"] == first["body"]["ref"]
    assert set(first["body"]) == {"msisdn", "text", "channel", "ref"}
    by_ref = {r.id: r for r in rows}
    sample = by_ref[first["body"]["ref"]]
    assert first["body"]["msisdn"] == sample.phone and sample.phone.startswith("+62")
    assert "Yth. Peserta" in sample.text and "/notification/unsubscribe/" in sample.text
    with runtime.reading() as uow:
        outcomes = Counter(
            uow.session.scalars(
                select(DeliveryAttempt.outcome).where(DeliveryAttempt.delivery_id.in_([r.id for r in rows]))
            )
        )
        shown = announcements.progress(uow, announcements.get(uow, announcement_id))
    assert outcomes["wait"] == 4 and outcomes["retry"] == 4 and outcomes["sent"] == 10
    assert shown["total"] == 15 and shown["queued"] == 5  # the mail is the mail loop's; SMS and WhatsApp are out
    assert shown["sent"] == 10


def test_a_permanent_refusal_is_failed_at_once_and_never_sent_again(tmp_path, database_url, local_gateway):
    refused_phone = "+6281299999999"

    def refuse_one(body, n):
        if body["msisdn"] == refused_phone:
            return 400, {}, {"error": "invalid number"}
        return 200, {}, {"id": f"gw-{n}"}

    server = local_gateway(refuse_one)
    runtime = runtime_with(tmp_path, database_url, **gateway_env(server.url))
    register(runtime, 1)
    register(runtime, 2, phone=refused_phone)
    announce_by(runtime, ["sms"])
    transport = gateway.HttpGateway(runtime.settings)
    limiter = ChannelLimiter(runtime.engine, runtime.settings.channel_rates)
    send_until_settled(runtime, transport, limiter)
    due_now(runtime)
    for _ in range(3):
        gateway.send_due(runtime, transport, limiter)

    statuses = {r.phone: (r.status, r.attempts, r.last_error) for r in gateway_rows(runtime)}
    assert statuses[refused_phone][:2] == ("failed", 1) and "400" in statuses[refused_phone][2]
    assert [r["body"]["msisdn"] for r in server.requests].count(refused_phone) == 1


def test_an_announcement_by_email_only_writes_no_sms_and_one_by_sms_only_writes_no_mail(
    tmp_path, database_url, local_gateway
):
    from services.notification.tables import Delivery

    runtime = runtime_with(tmp_path, database_url, **gateway_env(local_gateway().url))
    register(runtime, 1)
    email_only = announce_by(runtime, ["email"])
    sms_only = announce_by(runtime, ["sms"])
    with runtime.reading() as uow:
        mails = list(uow.session.scalars(select(Delivery.announcement_id).where(Delivery.announcement_id.is_not(None))))
    assert mails == [email_only]
    assert [r.announcement_id for r in gateway_rows(runtime)] == [sms_only]


def test_someone_who_opted_out_of_sms_gets_whatsapp_but_no_sms(tmp_path, database_url, local_gateway):
    from services.notification import domain

    runtime = runtime_with(tmp_path, database_url, **gateway_env(local_gateway().url))
    register(runtime, 1)
    with runtime.unit_of_work() as uow:
        domain.opt_out(uow, "peserta1@kaltaraprov.go.id", "sms")
        uow.commit()
    announce_by(runtime, ["sms", "whatsapp"])
    assert [r.channel for r in gateway_rows(runtime)] == ["whatsapp"]


def test_a_confirmation_also_goes_as_a_short_sms_when_configured_and_a_redelivered_event_adds_nothing(
    tmp_path, database_url, local_gateway
):
    from services.notification import channels

    runtime = runtime_with(
        tmp_path, database_url, LABINOV_SMS_MESSAGES="registration_confirmed", **gateway_env(local_gateway().url)
    )
    event = register(runtime, 1)
    for _ in range(2):
        with runtime.unit_of_work() as uow:
            channels.after_event(uow, event, runtime.settings)
            uow.commit()
    rows = gateway_rows(runtime)
    assert [(r.channel, r.template, r.caused_by) for r in rows] == [("sms", "registration_confirmed", event.id)]
    assert len(rows[0].text) <= rules.SHORT_TEXT_LIMIT


def test_the_status_callback_needs_the_shared_secret_and_marks_the_message_delivered_or_bounced(
    tmp_path, database_url, local_gateway
):
    from services.notification.app import create_app
    from shared.tokens import load_private_key_pem

    server = local_gateway()
    runtime = runtime_with(tmp_path, database_url, **gateway_env(server.url))
    register(runtime, 1)
    register(runtime, 2)
    announce_by(runtime, ["sms"])
    send_until_settled(
        runtime, gateway.HttpGateway(runtime.settings), ChannelLimiter(runtime.engine, runtime.settings.channel_rates)
    )
    first, second = gateway_rows(runtime)
    load_private_key_pem(runtime.settings)
    client = create_app(runtime).test_client()
    url = "/notification/api/v1/gateway/status"

    for headers in ({}, {"X-Gateway-Secret": "wrong"}, {"X-Gateway-Secret": SECRET[:-1]}):
        refused = client.post(url, json={"reference": first.id, "status": "delivered"}, headers=headers)
        assert refused.status_code == 401 and refused.mimetype == "application/problem+json"
    assert gateway_rows(runtime)[0].status == "sent"

    ok = {"X-Gateway-Secret": SECRET}
    delivered = client.post(url, json={"reference": first.id, "status": "delivered", "extra": 1}, headers=ok)
    assert delivered.status_code == 200 and delivered.get_json()["status"] == "delivered"
    again = client.post(url, json={"reference": first.id, "status": "failed"}, headers=ok)
    assert again.get_json()["status"] == "delivered", "a final state is not overwritten"
    bounced = client.post(url, json={"reference": second.id, "status": "undelivered", "error": "phone off"}, headers=ok)
    assert bounced.get_json()["status"] == "bounced" and bounced.get_json()["last_error"] == "phone off"
    assert outcome_events(runtime, second.id) == ["notification.delivered", "notification.failed"]
    assert outcome_events(runtime, first.id) == ["notification.delivered"], "told once, when the gateway took it"
    assert client.post(url, json={"reference": "nope", "status": "delivered"}, headers=ok).status_code == 404
    assert client.post(url, json={"reference": first.id, "status": "lost"}, headers=ok).status_code == 422


def outcome_events(runtime, delivery_id: str) -> list[str]:
    """The ``notification.*`` events published about one delivery, in order."""
    outbox = runtime.outbox.c
    with runtime.engine.connect() as connection:
        payloads = connection.execute(select(outbox.payload).order_by(outbox.id)).scalars()
        return [e["type"] for e in map(json.loads, payloads) if e.get("subject") == delivery_id]


def test_a_callback_quicker_than_the_senders_commit_is_the_outcome_told_once(tmp_path, database_url, local_gateway):
    """The gateway reports ``delivered`` while its answer to the send is still on its way: the row is still
    ``sending``. The report records the outcome and its event; the sender's own finish then writes nothing."""
    from services.notification.app import create_app
    from shared.tokens import load_private_key_pem

    reports = []

    def report_before_answering(body, n):
        reports.append(client.post(url, json={"reference": body["ref"], "status": "delivered"}, headers=ok))
        return 200, {}, {"id": f"gw-{n}"}

    server = local_gateway(report_before_answering)
    runtime = runtime_with(tmp_path, database_url, **gateway_env(server.url))
    load_private_key_pem(runtime.settings)
    client = create_app(runtime).test_client()
    url, ok = "/notification/api/v1/gateway/status", {"X-Gateway-Secret": SECRET}
    register(runtime, 1)
    announce_by(runtime, ["sms"])
    send_until_settled(
        runtime, gateway.HttpGateway(runtime.settings), ChannelLimiter(runtime.engine, runtime.settings.channel_rates)
    )
    [row] = gateway_rows(runtime)
    assert [r.status_code for r in reports] == [200] and reports[0].get_json()["status"] == "delivered"
    assert (row.status, row.attempts, row.gateway_id) == ("delivered", 1, "gw-0")
    assert row.sent_at is not None and row.delivered_at is not None
    assert outcome_events(runtime, row.id) == ["notification.delivered"], "neither lost nor told twice"
    with runtime.reading() as uow:
        tries = uow.session.scalars(select(DeliveryAttempt.outcome).where(DeliveryAttempt.delivery_id == row.id))
        assert list(tries) == ["delivered"]


def test_the_channel_rate_holds_across_two_competing_loops(tmp_path, database_url, local_gateway):
    server = local_gateway()
    env = gateway_env(server.url, rate="20/second")
    first = runtime_with(tmp_path, database_url, **env)
    second = runtime_with(tmp_path, database_url, **env)  # another process: its own engine and its own limiter
    for i in range(1, 41):
        register(first, i)
    announce_by(first, ["sms"])
    stop = threading.Event()

    def loop(runtime):
        transport = gateway.HttpGateway(runtime.settings)
        limiter = ChannelLimiter(runtime.engine, runtime.settings.channel_rates)
        while not stop.is_set():
            if gateway.send_due(runtime, transport, limiter, stop, batch_size=5) == 0:
                time.sleep(0.02)

    threads = [threading.Thread(target=loop, args=(runtime,)) for runtime in (first, second)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(server.accepted()) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert server.accepted() == Counter({r.id: 1 for r in gateway_rows(first)}) and len(server.accepted()) == 40
    times = sorted(r["at"] for r in server.requests)
    # a bucket of 20 refilled at 20 a second: the 20 after the first 20 take at least a second, whoever sends them
    assert times[-1] - started >= 0.9
    for index, moment in enumerate(times):  # in any half second, at most the burst and half a second's refill
        assert sum(1 for other in times[index:] if other - moment < 0.5) <= 20 + 10 + 1
