"""Outgoing webhooks against a real local receiver, on PostgreSQL and SQLite: deliveries signed per Standard
Webhooks and verified by the `standardwebhooks` package, one per (event, webhook) however often the event
comes, retried with every attempt visible, switched off after repeated failure, and never sent to a local
address unless allowed — neither at creation nor at send time."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select, update
from standardwebhooks import Webhook as StandardWebhook

from services.notification import rules, webhooks
from services.notification.handlers import HANDLERS
from services.notification.tables import Delivery, Webhook, WebhookDelivery
from shared.auth import Principal, TokenIssuer, load_private_key_pem
from shared.backoff import Backoff
from shared.config import load_settings
from shared.events import make_event, parse_event
from shared.migrations import upgrade

API = "/notification/api/v1"


class Receiver:
    """A webhook receiver in a thread: verifies each request with the `standardwebhooks` package, answers by
    ``script(n)``."""

    def __init__(self, script=None):
        self.secret: str | None = None
        self.received: list[dict] = []
        self.script = script or (lambda n: 204)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {name.lower(): value for name, value in self.headers.items()}
                verified = StandardWebhook(outer.secret).verify(body, headers)
                n = len(outer.received)
                outer.received.append({"headers": headers, "payload": verified})
                self.send_response(outer.script(n))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/labinov"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(script=None):
        made.append(Receiver(script))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.fixture
def runtime(tmp_path, database_url):
    from services.notification.bootstrap import bootstrap

    env = {"LABINOV_DATA_DIR": str(tmp_path), "LABINOV_WEBHOOK_ALLOW_LOCAL": "true"}
    if database_url:
        env["LABINOV_NOTIFICATION_DATABASE_URL"] = database_url
    made = bootstrap(load_settings("notification", env))
    upgrade(made)
    return made


@pytest.fixture
def client(runtime):
    from services.notification.app import create_app

    return create_app(runtime).test_client()


@pytest.fixture
def organiser(runtime) -> dict:
    issuer = TokenIssuer(load_private_key_pem(runtime.settings), 3600)
    token = issuer.issue(Principal("organiser-1", "panitia@kaltaraprov.go.id", "organiser", "Panitia"))
    return {"Authorization": f"Bearer {token}"}


def confirmed_event(i: int = 1):
    data = {
        "registration_id": f"r-{i}",
        "session_id": "s-1",
        "session_title": "Klinik Inovasi",
        "session_starts_at": "2027-03-01T01:00:00+00:00",
        "session_location": "Aula",
        "status": "confirmed",
        "name": "Sari Wulandari",
        "nip": "198503152010012001",
        "email": f"sari{i}@kaltaraprov.go.id",
        "phone": "+6281234567890",
        "opd": "Dinas Kesehatan",
    }
    return parse_event(make_event("registration.confirmed", data, source="/registration", correlation_id="req-1"))


def handle(runtime, event):
    with runtime.unit_of_work() as uow:
        HANDLERS[event.type](uow, event)
        uow.commit()


def subscribe(client, organiser, server, event_types=("registration.confirmed",)) -> dict:
    response = client.post(
        f"{API}/webhooks", json={"url": server.url, "event_types": list(event_types)}, headers=organiser
    )
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    server.secret = created["secret"]
    return created


def deliveries(client, organiser, webhook_id) -> list[dict]:
    response = client.get(f"{API}/webhooks/{webhook_id}/deliveries", headers=organiser)
    assert response.status_code == 200
    return response.get_json()


def test_a_subscribed_event_arrives_signed_so_that_a_standard_webhooks_library_verifies_it(
    runtime, client, organiser, receiver
):
    server = receiver()
    created = subscribe(client, organiser, server)
    assert created["secret"].startswith("whsec_") and created["active"] is True
    event = confirmed_event()
    handle(runtime, event)

    assert webhooks.send_due(runtime) == 1
    [got] = server.received  # the receiver raised if the signature did not verify
    assert got["payload"]["type"] == "registration.confirmed"
    assert got["payload"]["event_id"] == event.id and got["payload"]["data"]["name"] == "Sari Wulandari"
    [shown] = deliveries(client, organiser, created["id"])
    assert shown["id"] == got["headers"]["webhook-id"] and shown["status"] == "sent"
    assert [t["outcome"] for t in shown["tries"]] == ["sent"]
    assert "secret" not in client.get(f"{API}/webhooks", headers=organiser).get_json()[0]


def test_a_webhook_is_sent_everything_an_event_says_except_the_participants_manage_link(
    runtime, client, organiser, receiver
):
    server = receiver()
    subscribe(client, organiser, server)
    link = "https://labinov.example/registration/manage/r-1?token=eyJ-secret-of-the-participant"
    event = parse_event(
        make_event(
            "registration.confirmed",
            {**confirmed_event().data, "manage_url": link, "ticket_code": "ABCDEFGHJKLMNPQR"},
            source="/registration",
            correlation_id="req-1",
        )
    )
    handle(runtime, event)

    assert webhooks.send_due(runtime) == 1
    [got] = server.received
    assert "manage_url" not in got["payload"]["data"] and "eyJ-secret" not in json.dumps(got["payload"])
    assert set(got["payload"]["data"]) == set(event.data) - {"manage_url"}
    assert got["payload"]["data"]["ticket_code"] == "ABCDEFGHJKLMNPQR"
    with runtime.reading() as uow:
        [mail] = uow.session.scalars(select(Delivery.body))
    assert link in mail, "the participant's own mail still carries the link"


def test_a_webhook_switched_off_or_subscribed_to_other_types_gets_no_delivery(runtime, client, organiser, receiver):
    """The subscription is read as the event's transaction sees it (on PostgreSQL, in SQL, within the event's
    one statement): no cache to miss a webhook made or switched off a moment ago."""
    listening, off, other = receiver(), receiver(), receiver()
    subscribe(client, organiser, listening)
    switched_off = subscribe(client, organiser, off)
    subscribe(client, organiser, other, event_types=("registration.cancelled", "session.changed"))
    with runtime.unit_of_work() as uow:
        uow.session.execute(update(Webhook).where(Webhook.id == switched_off["id"]).values(active=False))
        uow.commit()
    handle(runtime, confirmed_event())

    while webhooks.send_due(runtime):
        pass
    assert len(listening.received) == 1 and off.received == [] and other.received == []
    with runtime.reading() as uow:
        [row] = uow.session.scalars(select(WebhookDelivery))
    assert row.id.startswith("msg_") and len(row.id) == 36 and row.event_type == "registration.confirmed"


def test_an_event_handled_twice_is_delivered_once_and_another_type_not_at_all(runtime, client, organiser, receiver):
    server = receiver()
    created = subscribe(client, organiser, server)
    event = confirmed_event()
    handle(runtime, event)
    handle(runtime, event)  # a redelivery that got past the inbox (two workers racing): the unique key holds
    cancelled = parse_event(
        make_event(
            "registration.cancelled",
            {**confirmed_event(2).data, "status": "cancelled", "session_starts_at": "2027-03-01T01:00:00+00:00"},
            source="/registration",
            correlation_id="req-2",
        )
    )
    handle(runtime, cancelled)
    while webhooks.send_due(runtime):
        pass
    assert len(server.received) == 1 and len(deliveries(client, organiser, created["id"])) == 1


def test_a_failing_receiver_is_retried_with_the_same_webhook_id_and_every_attempt_is_visible(
    runtime, client, organiser, receiver, monkeypatch
):
    monkeypatch.setattr(rules, "WEBHOOK_RETRY", Backoff(base=timedelta(0), factor=1, cap=timedelta(0)))
    server = receiver(lambda n: 500 if n < 2 else 200)
    created = subscribe(client, organiser, server)
    handle(runtime, confirmed_event())
    for _ in range(3):
        webhooks.send_due(runtime)

    assert len({got["headers"]["webhook-id"] for got in server.received}) == 1 and len(server.received) == 3
    assert len({got["headers"]["webhook-timestamp"] for got in server.received}) >= 1
    [shown] = deliveries(client, organiser, created["id"])
    assert shown["status"] == "sent" and shown["attempts"] == 3
    assert [(t["outcome"], t["error"]) for t in shown["tries"]] == [
        ("retry", "HTTP 500"),
        ("retry", "HTTP 500"),
        ("sent", "HTTP 200"),
    ]
    with runtime.reading() as uow:
        assert uow.session.get(Webhook, created["id"]).consecutive_failures == 0, "a success resets the count"


def test_an_endpoint_failing_for_over_a_day_is_switched_off_with_its_reason(runtime, client, organiser, receiver):
    server = receiver(lambda n: 503)
    created = subscribe(client, organiser, server)
    with runtime.engine.begin() as connection:  # it has failed nine times in a row since the day before yesterday
        connection.execute(
            update(Webhook.__table__)
            .where(Webhook.__table__.c.id == created["id"])
            .values(consecutive_failures=9, failing_since=datetime.now(UTC) - timedelta(days=2))
        )
    handle(runtime, confirmed_event(1))
    handle(runtime, confirmed_event(2))
    webhooks.send_due(runtime, batch_size=1)

    [shown] = client.get(f"{API}/webhooks", headers=organiser).get_json()
    assert shown["active"] is False and "10 failed attempts in a row" in shown["disabled_reason"]
    with runtime.engine.begin() as connection:
        connection.execute(update(WebhookDelivery.__table__).values(next_attempt_at=datetime(2000, 1, 1)))
    webhooks.send_due(runtime)
    assert len(server.received) == 1, "nothing more goes to a switched-off endpoint"
    assert sorted(d["status"] for d in deliveries(client, organiser, created["id"])) == ["cancelled", "failed"]
    handle(runtime, confirmed_event(3))
    assert len(deliveries(client, organiser, created["id"])) == 2, "a switched-off endpoint is queued nothing new"


def test_a_receiver_answering_410_gone_is_switched_off_at_once(runtime, client, organiser, receiver):
    server = receiver(lambda n: 410)
    created = subscribe(client, organiser, server)
    handle(runtime, confirmed_event())
    webhooks.send_due(runtime)
    [shown] = client.get(f"{API}/webhooks", headers=organiser).get_json()
    assert shown["active"] is False and "410" in shown["disabled_reason"]
    assert deliveries(client, organiser, created["id"])[0]["status"] == "failed"


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://93.184.216.34/hook", "https://"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://localhost:8443/hook", "loopback"),
        ("https://10.1.2.3/hook", "private"),
        ("https://[::ffff:192.168.1.1]/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
    ],
)
def test_a_local_or_plain_http_url_is_refused_at_creation_naming_why(tmp_path, url, named):
    from services.notification.app import create_app
    from services.notification.bootstrap import bootstrap

    strict = bootstrap(load_settings("notification", {"LABINOV_DATA_DIR": str(tmp_path)}))
    upgrade(strict)
    issuer = TokenIssuer(load_private_key_pem(strict.settings), 3600)
    token = issuer.issue(Principal("organiser-1", "panitia@kaltaraprov.go.id", "organiser", "Panitia"))
    response = (
        create_app(strict)
        .test_client()
        .post(
            f"{API}/webhooks",
            json={"url": url, "event_types": ["registration.confirmed"]},
            headers={"Authorization": f"Bearer {token}"},
        )
    )
    assert response.status_code == 422, response.get_json()
    assert named in json.dumps(response.get_json()["errors"]["url"])


def test_an_unknown_event_type_is_refused_naming_it(client, organiser, receiver):
    response = client.post(
        f"{API}/webhooks",
        json={"url": receiver().url, "event_types": ["registration.confirmed", "payment.received"]},
        headers=organiser,
    )
    assert response.status_code == 422 and "event_types" in response.get_json()["errors"]


def test_the_address_is_checked_again_at_send_time_so_a_name_that_now_points_inside_is_not_called(
    runtime, client, organiser, receiver
):
    server = receiver()
    created = subscribe(client, organiser, server)  # accepted while local addresses were allowed
    handle(runtime, confirmed_event())
    webhooks.send_due(runtime, allow_local=False)  # as if the name now resolved to the loopback address

    assert server.received == []
    [shown] = deliveries(client, organiser, created["id"])
    assert shown["status"] == "queued" and shown["tries"][0]["error"].startswith("refused:")
    with runtime.reading() as uow:
        assert uow.session.scalar(select(WebhookDelivery.attempts)) == 1


def test_a_public_name_that_resolves_to_a_private_address_at_send_time_is_not_called(monkeypatch):
    """DNS rebinding: the name was public when the webhook was made; now it answers with an inside address."""
    import socket

    def rebound(host, port, *args, **kwargs):
        assert host == "hooks.example.org"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", rebound)
    status, outcome = webhooks.post_signed(
        "https://hooks.example.org/labinov", rules.new_webhook_secret(bytes(32)), "msg_1", "{}", allow_local=False
    )
    assert status is None and "10.0.0.7" in outcome and "private" in outcome
