"""What a participant or a team is told about each event that concerns them, in the programme's time zone."""

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
    assert {"registration.promoted", "registration.cancelled", "results.published"} <= set(HANDLERS)


def result_data(**overrides) -> dict:
    data = {
        "round_id": "7d1c1a8e-0000-4000-8000-0000000000r1",
        "round_name": "Evaluasi Desk",
        "programme_id": None,
        "proposal_id": "7d1c1a8e-0000-4000-8000-0000000000p1",
        "proposal_title": "Layanan KTP Keliling",
        "registration_id": "7d1c1a8e-0000-4000-8000-000000000001",
        "team_name": "Sari Wulandari",
        "team_email": "sari@kaltaraprov.go.id",
        "opd": "Dinas Kependudukan",
        "language": "id",
        "rank": 2,
        "ranked_proposals": 14,
        "advanced": True,
        "reason": None,
        "final": False,
        "objection_deadline": "2027-04-10T08:00:00+00:00",
    }
    return {**data, **overrides}


def test_a_team_hears_its_rank_and_until_when_it_may_object(runtime):
    delivery = handle(runtime, "results.published", result_data())

    assert delivery.recipient == "sari@kaltaraprov.go.id"
    assert delivery.subject == "Hasil Evaluasi Desk · Results: Layanan KTP Keliling"
    assert "Peringkat: 2 dari 14 proposal." in delivery.body
    assert "LOLOS" in delivery.body and "(sementara)" in delivery.body
    assert "Masa sanggah dibuka sampai 10-04-2027 16:00 WITA" in delivery.body


def test_a_team_that_did_not_advance_is_told_why_and_a_final_list_has_no_objection_window(runtime):
    data = result_data(advanced=False, reason="Nilai di bawah ambang 7,0.", final=True, objection_deadline=None)

    delivery = handle(runtime, "results.published", data)

    assert "belum lolos ke tahap berikutnya. Alasan: Nilai di bawah ambang 7,0." in delivery.body
    assert "does not advance. Reason: Nilai di bawah ambang 7,0." in delivery.body
    assert "sanggah" not in delivery.body and "(sementara)" not in delivery.body
