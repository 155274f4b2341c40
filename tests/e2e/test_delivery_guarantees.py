"""No lost and no doubled messages, through the real processes on RabbitMQ and PostgreSQL."""

from __future__ import annotations

import collections

import pytest
import requests
from sqlalchemy import create_engine, text

from shared.events import make_event
from tests.support.broker_client import QueueReader, publish_raw
from tests.support.servers import RABBITMQ_HOST, RABBITMQ_PORT, rabbitmqctl
from tests.support.suite import participant
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


def unsent_outbox_rows(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")).scalar_one()
    finally:
        engine.dispose()


def _registration_confirmed(i: int, **overrides) -> dict:
    person = participant(i)
    data = {
        "registration_id": f"00000000-0000-4000-8000-{i:012d}",
        "session_id": "11111111-1111-4111-8111-111111111111",
        "session_title": "Workshop Desain Inovasi",
        "session_starts_at": "2027-03-03T09:00:00+08:00",
        "session_location": "Tarakan",
        "status": "confirmed",
        **{k: person[k] for k in ("name", "nip", "email", "opd")},
        "phone": "+6281200000001",
    }
    data.update(overrides)
    return make_event("registration.confirmed", data, source="/registration", correlation_id=f"test-{i}")


def test_registration_answers_during_a_broker_outage_and_the_mail_arrives_once_when_it_is_back(
    rabbitmq, postgres_urls, smtp_server, suite_factory
):
    _url, vhost = rabbitmq
    proxy = TcpProxy(RABBITMQ_HOST, RABBITMQ_PORT).start()
    broker_url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}"
    suite = suite_factory(broker_url=broker_url, database_urls=postgres_urls, smtp_url=smtp_server.url).start()
    session_id = suite.create_session()

    proxy.cut()
    response = suite.register(session_id, participant(3, email="tini@kaltaraprov.go.id"))

    assert response.status_code == 201, response.text
    wait_until(  # evidence that the relay tried while the broker was away
        lambda: (
            suite.metric("registration", "labinov_messages_published_total", outcome="failed") >= 1
            or "outbox relay paused" in (suite.logs / "registration-worker.log").read_text()
        ),
        what="the relay to find the broker away",
    )
    # the event waits in registration's outbox, unsent (the relay may have tried it already: a retry not yet
    # due is not counted as pending by the metric, so the table is asked)
    assert unsent_outbox_rows(postgres_urls["registration"]) >= 1
    assert not smtp_server.messages, "mail arrived although the broker was away"
    assert suite.outcomes("notification") == [], "an event reached notification although the broker was away"

    proxy.start()
    wait_until(lambda: smtp_server.to("tini@kaltaraprov.go.id"), timeout=90, what="the mail after the outage")
    wait_until(lambda: suite.metric("registration", "labinov_outbox_pending") == 0, what="the outbox to drain")
    # every copy the relay published (a lost confirm may publish one twice) has been consumed and acked, and
    # every delivery is finished: no further mail can come
    wait_until(
        lambda: "notification-events\t0" in rabbitmqctl("list_queues", "-p", vhost, "name", "messages"),
        what="notification's queue to be empty, nothing unacked",
    )
    assert suite.outcomes("notification", event_type="registration.confirmed", outcome="handled")
    [delivery] = suite.wait_for_mail_to_settle(1)
    assert delivery["status"] == "sent"
    assert len(smtp_server.messages) == 1
    proxy.cut()


def test_the_same_event_delivered_twice_sends_one_mail(rabbitmq, postgres_urls, smtp_server, suite_factory):
    broker_url, _vhost = rabbitmq
    suite = suite_factory(broker_url=broker_url, database_urls=postgres_urls, smtp_url=smtp_server.url).start()
    event = _registration_confirmed(1)

    publish_raw(broker_url, event, "registration.confirmed", message_id=event["id"])
    publish_raw(broker_url, event, "registration.confirmed", message_id=event["id"])

    suite.wait_for_outcomes("notification", 1, event_id=event["id"], outcome="handled")
    suite.wait_for_outcomes("notification", 1, event_id=event["id"], outcome="duplicate")
    [delivery] = suite.wait_for_mail_to_settle(1)
    assert delivery["caused_by"] == event["id"] and delivery["status"] == "sent"
    assert len(suite.outcomes("notification", event_id=event["id"])) == 2
    assert len(smtp_server.messages) == 1


def test_a_worker_killed_after_its_commit_but_before_the_ack_causes_one_mail(
    rabbitmq, postgres_urls, smtp_server, suite_factory
):
    broker_url, _vhost = rabbitmq
    suite = suite_factory(broker_url=broker_url, database_urls=postgres_urls, smtp_url=smtp_server.url)
    suite.start(workers=("registration", "evaluation"))
    crashing = suite.start_worker(
        "notification", name="crashing-notification-worker", module="tests.support.crashing_worker"
    )
    session_id = suite.create_session()

    assert suite.register(session_id, participant(5, email="dewi@kaltaraprov.go.id")).status_code == 201
    assert crashing.wait(60) == 137, "the crashing worker should have died before acking"
    suite.start_worker("notification")  # the broker redelivers the unacked message to this one

    wait_until(lambda: smtp_server.to("dewi@kaltaraprov.go.id"), what="the mail")
    [redelivered] = suite.wait_for_outcomes("notification", 1, outcome="duplicate")
    [delivery] = suite.wait_for_mail_to_settle(1)
    assert delivery["caused_by"] == redelivered.event_id and delivery["status"] == "sent"
    assert len(smtp_server.messages) == 1


def test_bad_and_failing_messages_are_dead_lettered_and_the_rest_are_processed(
    rabbitmq, postgres_urls, smtp_server, suite_factory
):
    broker_url, _vhost = rabbitmq
    suite = suite_factory(
        broker_url=broker_url,
        database_urls=postgres_urls,
        smtp_url=smtp_server.url,
        extra_env={"LABINOV_MAX_HANDLER_ATTEMPTS": "3"},
    ).start()

    publish_raw(broker_url, {"hello": "not an event"}, "registration.confirmed")
    publish_raw(
        broker_url,
        "<xml>not even JSON</xml>",
        "registration.confirmed",
        content_type="text/plain",
        content_encoding="utf-8",
        serializer=None,
    )
    # well-formed, but no mail template exists for a "confirmed" event that says "cancelled": the handler
    # fails every time, as with a bug or a lasting outage of something it needs
    poison = _registration_confirmed(2, status="cancelled")
    publish_raw(broker_url, poison, "registration.confirmed", message_id=poison["id"])
    good = _registration_confirmed(3, email="baik@kaltaraprov.go.id")
    publish_raw(broker_url, good, "registration.confirmed", message_id=good["id"])

    wait_until(lambda: smtp_server.to("baik@kaltaraprov.go.id"), what="the good message's mail")
    dead_letters = QueueReader(broker_url, "notification-dead")
    dead = wait_until(lambda: dead_letters.at_least(3), timeout=60, what="three dead letters")
    [failing] = [m for m in dead if m.payload.get("id") == poison["id"]]
    unfit = [m for m in dead if m is not failing]
    assert failing.headers["x-labinov-attempt"] == 3  # failing: dead after the third attempt
    assert "KeyError" in failing.headers["x-labinov-error"]
    assert [m.headers["x-labinov-attempt"] for m in unfit] == [1, 1]  # unfit: dead at once, no retries
    assert sorted("undecodable" in m.payload for m in unfit) == [False, True]
    assert len(dead) == 3
    assert suite.metric("notification", "labinov_messages_consumed_total", outcome="retried") == 2


def test_two_notification_workers_share_the_queue_without_duplicate_mails(
    rabbitmq, postgres_urls, smtp_server, suite_factory
):
    broker_url, vhost = rabbitmq
    suite = suite_factory(broker_url=broker_url, database_urls=postgres_urls, smtp_url=smtp_server.url)
    suite.start(workers=("registration", "evaluation"))
    suite.start_worker("notification", name="notification-worker-1")
    suite.start_worker("notification", name="notification-worker-2")
    wait_until(
        lambda: "notification-events\t2" in rabbitmqctl("list_queues", "-p", vhost, "name", "consumers"),
        what="both workers to consume from notification-events",
    )
    session_id = suite.create_session(capacity=100)

    people = [participant(100 + i) for i in range(40)]
    for person in people:
        assert suite.register(session_id, person).status_code == 201

    handled = suite.wait_for_outcomes("notification", 40, event_type="registration.confirmed", outcome="handled")
    deliveries = suite.wait_for_mail_to_settle(40)
    assert len(handled) == 40 and len(deliveries) == 40
    assert {d["status"] for d in deliveries} == {"sent"}
    assert len(smtp_server.messages) == 40
    per_recipient = collections.Counter(str(m["To"]) for m in smtp_server.messages)
    assert set(per_recipient) == {p["email"] for p in people}
    assert set(per_recipient.values()) == {1}
    handled_by = collections.Counter(outcome.worker for outcome in handled)
    assert set(handled_by) == {"notification-worker-1", "notification-worker-2"}, f"one worker did it all: {handled_by}"
    assert requests.get(suite.url("notification", "health/ready"), timeout=5).ok
