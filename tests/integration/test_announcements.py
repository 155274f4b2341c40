"""Announcements end to end inside the service, on PostgreSQL and SQLite, against a real SMTP server: the
audience from the projection, one message per address, placeholders, scheduling, cancelling, opt-out with
one click, and the hourly cap on mail from public causes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select, update

from services.notification import announcements, domain, sending
from services.notification.mail import SmtpTransport
from services.notification.tables import Announcement, Delivery, OptOut, RegistrationView
from shared.clock import utcnow
from shared.errors import Conflict, RuleViolation
from shared.events import make_event, parse_event
from tests.support.runtimes import migrated_runtime
from tests.support.smtp import SmtpServer

SESSION = "s-1"
WITA = ZoneInfo("Asia/Makassar")


@pytest.fixture
def runtime(tmp_path, database_url):
    return migrated_runtime("notification", tmp_path, database_url)


@pytest.fixture
def app_client_for():
    def make(runtime):
        from services.notification.app import create_app
        from shared.tokens import load_private_key_pem

        load_private_key_pem(runtime.settings)  # as on a make run: registration made the suite's key first
        return create_app(runtime).test_client()

    return make


def register(runtime, i: int, status: str = "confirmed", session: str = SESSION, email: str | None = None, **more):
    event_type = {"confirmed": "registration.confirmed", "waitlisted": "registration.waitlisted"}[status]
    data = {
        "registration_id": f"r-{session}-{i}",
        "session_id": session,
        "programme_id": "prog-1",
        "session_title": f"Klinik {session}",
        "session_starts_at": "2027-03-01T01:00:00+00:00",
        "session_location": "Aula",
        "status": status,
        "name": f"Peserta {i}",
        "nip": f"198503152010011{i % 999 + 1:03d}",
        "email": email or f"peserta{i}@kaltaraprov.go.id",
        "phone": "+6281200000001",
        "opd": "Dinas Kominfo",
        "waitlist_position": 1 if status == "waitlisted" else None,
        **more,
    }
    event = parse_event(make_event(event_type, data, source="/registration", correlation_id=f"req-{i}"))
    with runtime.unit_of_work() as uow:
        domain.notify_registration(uow, event, WITA, runtime.settings.mail_hourly_cap)
        uow.commit()


def announce(runtime, audience: dict, subject="Info {session_title}", body="Yth. {name}, sampai jumpa.", **more):
    data = {"subject": subject, "body": body, "channels": ["email"], "audience": audience, "send_at": None, **more}
    with runtime.unit_of_work() as uow:
        created = announcements.create(uow, data, "panitia@kaltaraprov.go.id", "req-a")
        uow.commit()
        return created.id


def progress(runtime, announcement_id: str) -> dict:
    with runtime.reading() as uow:
        return announcements.progress(uow, announcements.get(uow, announcement_id))


def drain(runtime, smtp) -> None:
    while announcements.expand_due(runtime):
        pass
    while sending.send_due_mail(runtime, SmtpTransport(smtp.url), batch_size=200):
        pass


def forget_announcement_mail(runtime) -> None:
    """The registration mail of the setup is not what these tests look at."""
    with runtime.engine.begin() as connection:
        connection.execute(update(Delivery.__table__).where(Delivery.announcement_id.is_(None)).values(status="sent"))


def test_an_announcement_reaches_each_address_of_its_audience_once_with_placeholders_filled(runtime):
    for i in range(5):
        register(runtime, i)
    register(runtime, 5, "waitlisted")
    register(runtime, 0, session="s-2")  # the same person in another session: not this audience
    register(runtime, 99, email="peserta1@kaltaraprov.go.id")  # registered twice: one message
    forget_announcement_mail(runtime)
    announcement_id = announce(runtime, {"session_id": SESSION, "statuses": ["confirmed"]})

    with SmtpServer() as smtp:
        drain(runtime, smtp)
        received = smtp.messages

    assert sorted(str(m["To"]) for m in received) == [f"peserta{i}@kaltaraprov.go.id" for i in range(5)]
    mail = next(m for m in received if str(m["To"]) == "peserta2@kaltaraprov.go.id")
    assert mail["Subject"] == "Info Klinik s-1"
    assert "Yth. Peserta 2, sampai jumpa." in mail.get_body(preferencelist=("plain",)).get_content()
    assert mail["List-Unsubscribe"].startswith("<http://127.0.0.1:8000/notification/unsubscribe/")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    shown = progress(runtime, announcement_id)
    assert (shown["status"], shown["total"], shown["sent"], shown["queued"], shown["failed"]) == ("sent", 5, 5, 0, 0)


def test_a_fan_out_run_twice_writes_no_delivery_twice(runtime):
    for i in range(3):
        register(runtime, i)
    announcement_id = announce(runtime, {"programme_id": "prog-1"})
    with runtime.reading() as uow:
        announcement = uow.session.get(Announcement, announcement_id)
        members = announcements.audience_of(uow, {"programme_id": "prog-1"})
    with runtime.unit_of_work() as uow:  # a worker that died after its first batch had written these
        batch = [announcements.message_for(uow, announcement, m, runtime) for m in members[:2]]
        assert domain.queue_messages(uow, announcement_id, None, batch, announcement_id=announcement_id) == 2
        uow.commit()
    with runtime.unit_of_work() as uow:  # all three again: only the one not yet written is new (not committed)
        everyone = [announcements.message_for(uow, announcement, m, runtime) for m in members]
        assert domain.queue_messages(uow, announcement_id, None, everyone, announcement_id=announcement_id) == 1

    announcements.expand_due(runtime)

    assert progress(runtime, announcement_id)["total"] == 3


def test_an_unknown_placeholder_is_refused_by_name(runtime):
    with pytest.raises(RuleViolation) as refused:
        announce(runtime, {"opd": "Dinas Kominfo"}, body="Yth. {nama}, {name}")
    assert "{nama}" in refused.value.errors["body"][0]


def test_a_scheduled_announcement_waits_for_its_time_and_can_be_cancelled_until_then(runtime):
    register(runtime, 1)
    later = datetime.now(UTC) + timedelta(hours=1)
    waiting = announce(runtime, {"opd": "Dinas Kominfo"}, send_at=later)
    cancelled = announce(runtime, {"opd": "Dinas Kominfo"}, send_at=later)

    assert announcements.expand_due(runtime) == 0  # not yet, whichever worker looks (also after a restart)
    with runtime.unit_of_work() as uow:
        assert announcements.cancel(uow, cancelled).status == "cancelled"
        uow.commit()
    with runtime.engine.begin() as connection:  # its time comes
        connection.execute(update(Announcement.__table__).values(send_at=utcnow() - timedelta(seconds=1)))

    assert announcements.expand_due(runtime) == 1
    assert announcements.expand_due(runtime) == 0
    assert progress(runtime, waiting)["total"] == 1
    assert progress(runtime, cancelled)["total"] == 0
    with runtime.unit_of_work() as uow, pytest.raises(Conflict):
        announcements.cancel(uow, waiting)


def test_one_click_opt_out_stops_announcements_but_not_registration_mail(runtime, app_client_for):
    register(runtime, 1)
    client = app_client_for(runtime)
    url = domain.unsubscribe_url(runtime, "peserta1@kaltaraprov.go.id")
    path = url.removeprefix(runtime.settings.public_url)

    assert client.get(path, headers={"Accept": "text/html"}).status_code == 200  # a link checker opts nobody out
    answer = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert client.post(path.replace("unsubscribe/", "unsubscribe/x")).status_code == 404  # forged

    announcement_id = announce(runtime, {"emails": ["peserta1@kaltaraprov.go.id", "tamu@example.org"]})
    register(runtime, 1, session="s-2")
    with SmtpServer() as smtp:
        drain(runtime, smtp)
        received = [(str(m["To"]), m["Subject"]) for m in smtp.messages]

    assert ("peserta1@kaltaraprov.go.id", "Info") not in received
    assert any(to == "peserta1@kaltaraprov.go.id" and s.startswith("Pendaftaran") for to, s in received)
    assert ("tamu@example.org", "Info") in received
    assert progress(runtime, announcement_id)["opted_out"] == 1


def test_mail_from_public_causes_past_the_hourly_cap_is_held_back(tmp_path, database_url):
    runtime = migrated_runtime("notification", tmp_path, database_url)
    cap = runtime.settings.mail_hourly_cap
    for i in range(cap + 3):
        register(runtime, i, session=f"s-{i}", email="korban@example.org")

    with runtime.reading() as uow:
        statuses = [d.status for d in uow.session.scalars(select(Delivery).order_by(Delivery.created_at))]
    assert statuses.count("queued") == cap and statuses.count("held") == 3
    with runtime.reading() as uow:
        held = domain.list_deliveries(uow, status="held")
    assert {d.recipient for d in held} == {"korban@example.org"}


def test_two_workers_fanning_out_and_sending_deliver_each_message_once(runtime):
    for i in range(60):
        register(runtime, i)
    forget_announcement_mail(runtime)
    announcement_id = announce(runtime, {"session_id": SESSION})

    with SmtpServer() as smtp:
        transport = SmtpTransport(smtp.url)

        def work():
            while announcements.expand_due(runtime, batch_size=7) or sending.send_due_mail(runtime, transport, 5):
                pass

        workers = [threading.Thread(target=work) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        received = sorted(str(m["To"]) for m in smtp.messages)

    assert received == sorted(f"peserta{i}@kaltaraprov.go.id" for i in range(60))
    assert progress(runtime, announcement_id)["sent"] == 60


def test_two_worker_processes_racing_deliver_an_announcement_to_2000_exactly_once_each(tmp_path, postgres_url):
    """Two OS processes, each fanning out and sending as a worker does, on one announcement: every member gets
    one mail — also the one registered twice — and nobody who opted out gets any."""
    import multiprocessing

    from tests.support.mail_racers import fan_out_and_send

    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    members = [f"anggota{i}@kaltaraprov.go.id" for i in range(2000)]
    refusing = set(members[::97])
    now = datetime.now(UTC)
    rows = [
        {"registration_id": f"r-{i}", "session_id": SESSION, "programme_id": "prog-1", "email": email,
         "name": f"Anggota {i}", "opd": "Dinas Kominfo", "language": "id", "status": "confirmed", "event_time": now}
        for i, email in enumerate(members)
    ] + [  # the same person registered a second time
        {"registration_id": "r-again", "session_id": SESSION, "programme_id": "prog-1", "email": members[5],
         "name": "Anggota 5", "opd": "Dinas Kominfo", "language": "id", "status": "confirmed", "event_time": now}
    ]  # fmt: skip
    with runtime.engine.begin() as connection:
        connection.execute(insert(RegistrationView.__table__), rows)
        connection.execute(
            insert(OptOut.__table__), [{"email": e, "channel": "email", "created_at": now} for e in refusing]
        )
    announcement_id = announce(runtime, {"session_id": SESSION})

    spawn = multiprocessing.get_context("spawn")
    with SmtpServer() as smtp, spawn.Pool(2) as pool:
        barrier = spawn.Manager().Barrier(2)
        racers = [
            pool.apply_async(fan_out_and_send, (str(tmp_path), postgres_url, smtp.url, announcement_id, barrier))
            for _ in range(2)
        ]
        claimed = [racer.get(timeout=300) for racer in racers]
        received = [str(m["To"]) for m in smtp.messages]

    assert sorted(received) == sorted(set(members) - refusing)  # each once, the opted-out none
    assert all(claimed)  # both processes took part
    state = progress(runtime, announcement_id)
    assert (state["sent"], state["failed"], state["opted_out"]) == (2000 - len(refusing), 0, len(refusing))
