"""What a participant is told about each registration event, in the programme's time zone."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from services.notification.handlers import HANDLERS
from services.notification.tables import Delivery
from shared.events import make_event, parse_event
from shared.messaging.topology import SUBSCRIPTIONS

WITA = ZoneInfo("Asia/Makassar")


@pytest.fixture
def runtime(runtime_for):
    return runtime_for("notification")


def handle(runtime, event_type: str, data: dict) -> Delivery:
    event = parse_event(make_event(event_type, data, source="/registration", correlation_id="req-mail"))
    with runtime.unit_of_work() as uow:
        HANDLERS[event_type](uow, event)
        uow.commit()
    with runtime.reading() as uow:
        [delivery] = uow.session.scalars(select(Delivery).where(Delivery.caused_by == event.id)).all()
        return delivery


@pytest.mark.parametrize(
    ("event_type", "status", "subject_starts", "body_says"),
    [
        ("registration.confirmed", "confirmed", "Pendaftaran dikonfirmasi", "DIKONFIRMASI"),
        ("registration.waitlisted", "waitlisted", "Daftar tunggu", "DAFTAR TUNGGU pada urutan ke-3"),
        ("registration.promoted", "confirmed", "Kursi untuk Anda", "naik dari daftar tunggu"),
        ("registration.cancelled", "cancelled", "Pendaftaran dibatalkan", "DIBATALKAN"),
    ],
)
def test_each_registration_event_sends_its_own_mail(
    runtime, registration_data, event_type, status, subject_starts, body_says
):
    data = registration_data(status=status, waitlist_position=3 if status == "waitlisted" else None)

    delivery = handle(runtime, event_type, data)

    assert delivery.subject.startswith(subject_starts)
    assert data["session_title"] in delivery.subject
    assert body_says in delivery.body
    assert delivery.recipient == data["email"]


def test_times_in_a_mail_are_the_programme_s_local_time_with_its_zone(runtime, registration_data):
    data = registration_data()  # starts 2026-12-07 01:00 UTC

    delivery = handle(runtime, "registration.confirmed", data)

    assert "07-12-2026 09:00 WITA" in delivery.body


def test_an_event_whose_status_contradicts_its_type_sends_no_mail(runtime, registration_data):
    with pytest.raises(KeyError):
        handle(runtime, "registration.promoted", registration_data(status="waitlisted"))


def test_notification_hears_every_registration_event_it_has_a_mail_for():
    assert set(SUBSCRIPTIONS["notification"]) == set(HANDLERS)
    assert {"registration.promoted", "registration.cancelled"} <= set(HANDLERS)
