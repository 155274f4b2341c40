"""Announcements through the real notification worker processes on PostgreSQL and RabbitMQ: 2,000 recipients
sent by two competing workers, each exactly once (also an address that is in the audience twice); a scheduled
announcement goes out at its time although the worker that saw it created was killed meanwhile."""

from __future__ import annotations

import collections
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

RECIPIENTS = 2_000
TWICE = 10  # addresses that are in the audience twice (two registrations with one address)

_SESSION = text(
    """
    INSERT INTO sessions (session_id, programme_id, title, starts_at, ends_at, location, state, event_time)
    VALUES (:session_id, NULL, 'Sosialisasi Laboratorium Inovasi', :starts_at, :ends_at, 'Aula', 'published',
            now() AT TIME ZONE 'UTC')
    """
)
_REGISTRANTS = text(
    """
    INSERT INTO registrations (registration_id, session_id, programme_id, email, name, opd, language, status,
                               event_time)
    SELECT gen_random_uuid()::text, :session_id, NULL, 'peserta' || (CASE WHEN n > :distinct THEN n - :distinct
           ELSE n END) || '@kaltaraprov.go.id', 'Peserta ' || n, 'Dinas Kominfo', 'id', 'confirmed',
           now() AT TIME ZONE 'UTC'
    FROM generate_series(1, :count) AS n
    """
)


def fill_audience(notification_database: str, distinct: int, twice: int = 0) -> str:
    """A session in notification's own projection with ``distinct`` confirmed registrants, the first ``twice``
    of them registered a second time with the same address, as the events would have left it."""
    session_id = str(uuid.uuid4())
    starts = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=7)
    engine = create_engine(notification_database)
    try:
        with engine.begin() as connection:
            connection.execute(_SESSION, {"session_id": session_id, "starts_at": starts, "ends_at": starts})
            connection.execute(
                _REGISTRANTS, {"session_id": session_id, "distinct": distinct, "count": distinct + twice}
            )
    finally:
        engine.dispose()
    return session_id


def announce(suite, session_id: str, subject: str, send_at: datetime | None = None) -> str:
    body = {
        "subject": subject,
        "body": "Yth. {name}, sampai jumpa di {session_title}.",
        "channels": ["email"],
        "audience": {"session_id": session_id, "statuses": ["confirmed"]},
    }
    if send_at:
        body["send_at"] = send_at.isoformat()
    answer = requests.post(
        suite.url("notification", "api/v1/announcements"), json=body, headers=suite.organiser_headers(), timeout=10
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def progress(suite, announcement_id: str) -> dict:
    return requests.get(
        suite.url("notification", f"api/v1/announcements/{announcement_id}"),
        headers=suite.organiser_headers(),
        timeout=10,
    ).json()


def test_two_worker_processes_send_an_announcement_to_2000_recipients_each_exactly_once(
    rabbitmq, postgres_urls, smtp_server, suite_factory
):
    broker_url, _vhost = rabbitmq
    suite = suite_factory(broker_url=broker_url, database_urls=postgres_urls, smtp_url=smtp_server.url)
    suite.start(workers=("registration", "evaluation"))
    suite.start_worker("notification", name="notification-worker-1")
    suite.start_worker("notification", name="notification-worker-2")
    session_id = fill_audience(postgres_urls["notification"], RECIPIENTS, twice=TWICE)

    announcement = announce(suite, session_id, "Pengingat sosialisasi")
    done = wait_until(
        lambda: (shown := progress(suite, announcement))["status"] == "sent" and shown,
        timeout=180,
        interval=0.5,
        what="the announcement to reach its 2,000 recipients",
    )
    assert (done["total"], done["sent"], done["failed"], done["queued"]) == (RECIPIENTS, RECIPIENTS, 0, 0)
    time.sleep(1)  # a mail sent twice would arrive now
    received = collections.Counter(
        str(m["To"]) for m in smtp_server.messages if str(m["Subject"]) == "Pengingat sosialisasi"
    )
    assert len(received) == RECIPIENTS, "every address got it"
    assert set(received.values()) == {1}, [a for a, n in received.items() if n > 1][:5]


def test_a_scheduled_announcement_goes_out_at_its_time_after_its_worker_was_killed(
    rabbitmq, postgres_urls, smtp_server, suite_factory
):
    broker_url, _vhost = rabbitmq
    suite = suite_factory(broker_url=broker_url, database_urls=postgres_urls, smtp_url=smtp_server.url)
    suite.start(workers=("registration", "evaluation"))
    suite.start_worker("notification", name="notification-worker-1")
    session_id = fill_audience(postgres_urls["notification"], 3)
    send_at = datetime.now(UTC) + timedelta(seconds=8)

    announcement = announce(suite, session_id, "Jadwal besok", send_at=send_at)
    assert progress(suite, announcement)["status"] == "scheduled"
    suite.kill("notification-worker-1")  # SIGKILL, before its time
    time.sleep(1)
    suite.start_worker("notification", name="notification-worker-2")

    wait_until(lambda: progress(suite, announcement)["status"] == "sent", timeout=60, what="the scheduled announcement")
    mails = [m for m in smtp_server.messages if str(m["Subject"]) == "Jadwal besok"]
    assert sorted(str(m["To"]) for m in mails) == [f"peserta{i}@kaltaraprov.go.id" for i in (1, 2, 3)]
    sent_at = [datetime.fromisoformat(d["sent_at"]) for d in suite.deliveries() if d["announcement_id"] == announcement]
    assert len(sent_at) == 3 and min(sent_at) >= send_at, "not before its time"
