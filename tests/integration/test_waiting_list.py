"""Programmes, sessions, the waiting list, cancellation with promotion, participants' links and the
organiser's list — through the real API on PostgreSQL and SQLite; what is stored is checked in the tables."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from services.registration.tables import LabSession
from shared.tokens import TokenVerifier
from tests.support.registration_api import API, RegistrationApi, bearer
from tests.support.runtimes import migrated_runtime
from tests.support.seat_invariants import seat_problems, waiting_places
from tests.support.servers import postgres_database
from tests.support.suite import participant

AGENCIES = ["Dinas Kesehatan", "Bappeda", "Dinas Pendidikan"]


@pytest.fixture(params=["postgresql", "sqlite"])
def api(request, tmp_path):
    def make(url):
        runtime = migrated_runtime("registration", tmp_path, url)
        return Api(runtime)

    if request.param == "sqlite":
        built = make(None)
        yield built
    else:
        with postgres_database() as url:
            built = make(url)
            yield built
    built.runtime.engine.dispose()


class Api(RegistrationApi):
    """The registration API as an organiser and as the public use it."""

    def programme(self, opd_quota=None, opds=AGENCIES) -> str:
        return self.new_programme(opds, opd_quota)

    def session(self, capacity=2, **fields) -> dict:
        return self.new_session(capacity, **{"title": "Coaching Clinic", **fields})

    def register(self, session_id, i, **overrides):
        return self.post_registration(session_id, i, **overrides)

    def cancel(self, registration_id, headers=None):
        return self.client.post(f"{API}/registrations/{registration_id}/cancel", headers=headers or self.organiser)


# --- programmes and sessions ---------------------------------------------------------------------------


def test_a_programme_is_created_and_read_back_with_its_agencies_and_stages(api):
    programme_id = api.programme(opd_quota=3)
    read = api.client.get(f"{API}/programmes/{programme_id}").get_json()
    assert read["opds"] == AGENCIES and read["opd_quota"] == 3 and read["year"] == 2027
    assert read["stages"] == ["drum-up", "diagnose", "design", "deliver", "display", "documentation"]
    assert [p["id"] for p in api.client.get(f"{API}/programmes").get_json()] == [programme_id]


def test_a_session_with_only_the_five_old_fields_is_published_at_once_with_a_waiting_list(api):
    session = api.session()
    assert session["state"] == "published" and session["waitlist"] is True
    assert session["registration_opens_at"] is None and session["registration_closes_at"] is None
    assert session["seats_available"] == 2 and session["confirmed_count"] == 0


def test_session_times_come_back_in_the_programme_s_time_zone(api):
    session = api.session(starts_at="2027-03-01T01:00:00+00:00", ends_at="2027-03-01T04:00:00Z")
    assert session["starts_at"] == "2027-03-01T09:00:00+08:00"
    assert session["ends_at"] == "2027-03-01T12:00:00+08:00"
    assert api.client.get(f"{API}/sessions/{session['id']}").get_json()["starts_at"].endswith("+08:00")


def test_a_session_in_the_past_is_refused_unless_it_is_a_record(api):
    body = {
        "title": "Sosialisasi 2017",
        "starts_at": "2017-03-01T09:00:00+08:00",
        "ends_at": "2017-03-01T12:00:00+08:00",
        "location": "Tanjung Selor",
        "capacity": 100,
    }
    refused = api.client.post(f"{API}/sessions", json=body, headers=api.organiser)
    assert refused.status_code == 422 and "starts_at" in refused.get_json()["errors"]
    recorded = api.client.post(f"{API}/sessions", json={**body, "record": True}, headers=api.organiser)
    assert recorded.status_code == 201 and recorded.get_json()["record"] is True
    late = api.register(recorded.get_json()["id"], 1)
    assert late.status_code == 409 and "started" in late.get_json()["detail"]


def test_a_draft_is_not_listed_publicly_takes_no_registration_and_publishing_it_emits_session_published(api):
    programme_id = api.programme()
    draft = api.session(state="draft", programme_id=programme_id, stage="diagnose", description="Bedah masalah")
    assert draft["state"] == "draft" and draft["stage"] == "diagnose"
    assert api.client.get(f"{API}/sessions").get_json() == []
    assert api.client.get(f"{API}/sessions/{draft['id']}").status_code == 404
    assert api.client.get(f"{API}/sessions?state=draft").status_code == 403
    listed = api.client.get(f"{API}/sessions?state=draft", headers=api.organiser).get_json()
    assert [s["id"] for s in listed] == [draft["id"]]
    assert api.register(draft["id"], 1, opd="Bappeda").status_code == 409

    published = api.client.post(f"{API}/sessions/{draft['id']}/publish", headers=api.organiser)
    assert published.status_code == 200 and published.get_json()["state"] == "published"
    assert api.client.post(f"{API}/sessions/{draft['id']}/publish", headers=api.organiser).status_code == 409
    assert [e["data"]["session_id"] for e in api.events("session.published")] == [draft["id"]]
    assert api.register(draft["id"], 1, opd="Bappeda").status_code == 201
    filtered = api.client.get(f"{API}/sessions?programme_id={programme_id}&stage=diagnose").get_json()
    assert [s["id"] for s in filtered] == [draft["id"]]
    assert api.client.get(f"{API}/sessions?stage=design").get_json() == []


def test_registration_outside_the_window_is_refused_with_the_reason(api):
    opens = datetime.now(UTC) + timedelta(days=1)
    session = api.session(registration_opens_at=opens.isoformat())
    refused = api.register(session["id"], 1)
    assert refused.status_code == 409 and "opens at" in refused.get_json()["detail"]
    assert seat_problems(api.runtime, session["id"]) == []


def test_changing_the_time_or_place_emits_session_changed_with_old_and_new_values(api):
    session = api.session()
    new_start = datetime.fromisoformat(session["starts_at"]) + timedelta(hours=1)
    changed = api.client.patch(
        f"{API}/sessions/{session['id']}",
        json={"location": "Aula Bappeda", "starts_at": new_start.isoformat(), "title": "Coaching Clinic II"},
        headers=api.organiser,
    )
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["location"] == "Aula Bappeda" and changed.get_json()["title"] == "Coaching Clinic II"
    (event,) = api.events("session.changed")
    assert set(event["data"]["changes"]) == {"location", "starts_at"}
    assert datetime.fromisoformat(event["data"]["changes"]["starts_at"]["new"]) == new_start
    assert event["data"]["changes"]["location"] == {"old": "Kantor Gubernur Kaltara", "new": "Aula Bappeda"}
    title_only = api.client.patch(f"{API}/sessions/{session['id']}", json={"title": "Klinik"}, headers=api.organiser)
    assert title_only.status_code == 200 and len(api.events("session.changed")) == 1


def test_cancelling_a_session_emits_session_cancelled_and_stops_registrations(api):
    session = api.session()
    cancelled = api.client.post(f"{API}/sessions/{session['id']}/cancel", headers=api.organiser)
    assert cancelled.status_code == 200 and cancelled.get_json()["state"] == "cancelled"
    assert [e["data"]["state"] for e in api.events("session.cancelled")] == ["cancelled"]
    refused = api.register(session["id"], 1)
    assert refused.status_code == 409 and "cancelled" in refused.get_json()["detail"]
    assert api.client.post(f"{API}/sessions/{session['id']}/cancel", headers=api.organiser).status_code == 409


# --- registering, the waiting list, promotion ------------------------------------------------------------


def test_a_full_session_waitlists_with_gap_free_places_and_the_answer_carries_the_link(api):
    session = api.session(capacity=2)
    answers = [api.register(session["id"], i, language="en").get_json() for i in range(5)]
    assert [(a["status"], a["position"]) for a in answers] == [
        ("confirmed", None),
        ("confirmed", None),
        ("waitlisted", 1),
        ("waitlisted", 2),
        ("waitlisted", 3),
    ]
    first = answers[0]
    assert first["language"] == "en"
    assert first["manage_url"].endswith(f"/registration/manage/{first['id']}?token={first['manage_token']}")
    principal = TokenVerifier.from_settings(api.runtime.settings).verify(first["manage_token"])
    assert (principal.role, principal.account_id) == ("participant", first["id"])
    assert [e["data"]["waitlist_position"] for e in api.events("registration.waitlisted")] == [1, 2, 3]
    assert {e["data"]["language"] for e in api.events()[1:]} == {"en"}
    assert seat_problems(api.runtime, session["id"]) == []


def test_a_session_without_a_waiting_list_refuses_when_full(api):
    session = api.session(capacity=1, waitlist=False)
    assert api.register(session["id"], 1).status_code == 201
    full = api.register(session["id"], 2)
    assert full.status_code == 409 and "full" in full.get_json()["detail"]
    assert seat_problems(api.runtime, session["id"]) == []


def test_an_agency_not_of_the_programme_gets_422_naming_opd_and_nothing_is_written(api):
    session = api.session(programme_id=api.programme())
    refused = api.register(session["id"], 1, opd="Dinas Pariwisata")
    assert refused.status_code == 422 and "opd" in refused.get_json()["errors"]
    assert api.events("registration.confirmed") == []


def test_an_agency_at_its_quota_waits_while_others_take_the_free_seats(api):
    session = api.session(capacity=4, programme_id=api.programme(opd_quota=1))
    statuses = [
        api.register(session["id"], i, opd=opd).get_json()["status"]
        for i, opd in enumerate(["Dinas Kesehatan", "Dinas Kesehatan", "Bappeda"])
    ]
    assert statuses == ["confirmed", "waitlisted", "confirmed"]
    assert seat_problems(api.runtime, session["id"]) == []


def test_cancelling_a_confirmed_seat_promotes_the_first_waiting_registrant_who_fits(api):
    session = api.session(capacity=2, programme_id=api.programme(opd_quota=1))
    dinkes = api.register(session["id"], 1, opd="Dinas Kesehatan").get_json()
    bappeda = api.register(session["id"], 2, opd="Bappeda").get_json()
    second_dinkes = api.register(session["id"], 3, opd="Dinas Kesehatan").get_json()
    second_bappeda = api.register(session["id"], 4, opd="Bappeda").get_json()
    assert (second_dinkes["position"], second_bappeda["position"]) == (1, 2)

    cancelled = api.cancel(bappeda["id"])

    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    # the Dinkes registrant waits first, but Dinkes holds its one seat: the Bappeda registrant fits
    promoted = api.events("registration.promoted")
    assert [e["subject"] for e in promoted] == [second_bappeda["id"]]
    assert promoted[0]["data"]["status"] == "confirmed" and "programme_id" in promoted[0]["data"]
    assert [e["subject"] for e in api.events("registration.cancelled")] == [bappeda["id"]]
    still_waiting = api.client.get(f"{API}/registrations/{second_dinkes['id']}", headers=api.organiser).get_json()
    assert (still_waiting["status"], still_waiting["position"]) == ("waitlisted", 1)
    assert api.cancel(dinkes["id"]).status_code == 200
    assert [e["subject"] for e in api.events("registration.promoted")][-1] == second_dinkes["id"]
    assert seat_problems(api.runtime, session["id"]) == []


def test_a_waiting_registrant_who_cancels_moves_everyone_behind_up_without_renumbering_rows(api):
    session = api.session(capacity=1)
    ids = [api.register(session["id"], i).get_json()["id"] for i in range(5)]
    api.cancel(ids[2])  # second on the waiting list
    assert waiting_places(api.runtime, session["id"]) == [1, 2, 3]
    listed = api.client.get(
        f"{API}/sessions/{session['id']}/registrations?status=waitlisted", headers=api.organiser
    ).get_json()
    assert [(r["id"], r["position"]) for r in listed] == [(ids[1], 1), (ids[3], 2), (ids[4], 3)]
    assert seat_problems(api.runtime, session["id"]) == []


def test_raising_the_capacity_promotes_and_lowering_it_below_the_confirmed_is_refused(api):
    session = api.session(capacity=1)
    ids = [api.register(session["id"], i).get_json()["id"] for i in range(3)]
    lower = api.client.patch(f"{API}/sessions/{session['id']}", json={"capacity": 0}, headers=api.organiser)
    assert lower.status_code == 422
    raised = api.client.patch(f"{API}/sessions/{session['id']}", json={"capacity": 2}, headers=api.organiser)
    assert raised.status_code == 200 and raised.get_json()["seats_available"] == 0
    assert [e["subject"] for e in api.events("registration.promoted")] == [ids[1]]
    assert seat_problems(api.runtime, session["id"]) == []


def test_an_organiser_moves_a_registration_to_another_session_and_its_old_seat_is_filled(api):
    first, second = api.session(capacity=1), api.session(capacity=5)
    moving = api.register(first["id"], 1).get_json()
    waiting = api.register(first["id"], 2).get_json()
    moved = api.client.post(
        f"{API}/registrations/{moving['id']}/move", json={"session_id": second["id"]}, headers=api.organiser
    )
    assert moved.status_code == 200, moved.get_json()
    assert (moved.get_json()["session_id"], moved.get_json()["status"]) == (second["id"], "confirmed")
    assert [e["subject"] for e in api.events("registration.promoted")] == [waiting["id"]]
    assert seat_problems(api.runtime, first["id"]) == [] and seat_problems(api.runtime, second["id"]) == []
    again = api.register(second["id"], 1)  # the same NIP is now in the second session
    assert again.status_code == 409


# --- participants' links -------------------------------------------------------------------------------


def test_a_participant_reads_and_cancels_their_own_registration_with_the_link_s_token(api):
    session = api.session(capacity=1)
    mine = api.register(session["id"], 1).get_json()
    other = api.register(session["id"], 2).get_json()
    token = bearer(mine["manage_token"])

    read = api.client.get(f"{API}/registrations/{mine['id']}", headers=token)
    assert read.status_code == 200 and read.get_json()["nip"] == participant(1)["nip"]
    assert api.client.get(f"{API}/registrations/{other['id']}", headers=token).status_code == 403
    assert api.cancel(other["id"], headers=token).status_code == 403
    assert api.client.get(f"{API}/sessions/{session['id']}/registrations", headers=token).status_code == 403

    cancelled = api.cancel(mine["id"], headers=token)
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    after = api.client.get(f"{API}/registrations/{mine['id']}", headers=token)
    assert after.status_code == 200
    assert set(after.get_json()) == {"id", "session_id", "status", "cancelled_at"}
    assert after.get_json()["status"] == "cancelled"
    assert api.cancel(mine["id"], headers=token).status_code == 403
    assert api.cancel(mine["id"]).status_code == 409  # an organiser hears why
    promoted = api.client.get(f"{API}/registrations/{other['id']}", headers=bearer(other["manage_token"]))
    assert (promoted.get_json()["status"], promoted.get_json()["position"]) == ("confirmed", None)


def test_a_repeated_cancel_with_the_same_idempotency_key_replays_the_first_answer(api):
    session = api.session(capacity=1)
    mine = api.register(session["id"], 1).get_json()
    headers = {**bearer(mine["manage_token"]), "Idempotency-Key": "cancel-1"}
    first = api.cancel(mine["id"], headers=headers)
    again = api.cancel(mine["id"], headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(api.events("registration.cancelled")) == 1


# --- the organiser's list ----------------------------------------------------------------------------------


def test_the_organiser_lists_filters_searches_and_counts_a_session_s_registrations(api):
    session = api.session(capacity=2, programme_id=api.programme())
    for i, opd in enumerate(["Bappeda", "Dinas Kesehatan", "Bappeda"]):
        api.register(session["id"], i, opd=opd, name=f"Peserta {'Sari' if i == 1 else i}")
    url = f"{API}/sessions/{session['id']}/registrations"
    every = api.client.get(url, headers=api.organiser).get_json()
    assert [(r["status"], r["position"]) for r in every] == [
        ("confirmed", None),
        ("confirmed", None),
        ("waitlisted", 1),
    ]
    assert len(api.client.get(f"{url}?opd=Bappeda", headers=api.organiser).get_json()) == 2
    assert [r["name"] for r in api.client.get(f"{url}?q=sari", headers=api.organiser).get_json()] == ["Peserta Sari"]
    assert api.client.get(f"{url}?q=%25", headers=api.organiser).get_json() == []
    counts = api.client.get(f"{url}/counts", headers=api.organiser).get_json()
    assert counts["by_status"] == {"confirmed": 2, "waitlisted": 1, "cancelled": 0}
    assert {c["opd"]: c["waitlisted"] for c in counts["by_opd"]} == {"Bappeda": 1, "Dinas Kesehatan": 0}


def test_the_csv_export_opens_cleanly_in_a_spreadsheet_with_formulas_neutralised(api):
    session = api.session(capacity=5)
    api.register(session["id"], 1, name='=HYPERLINK("http://evil")', job_title="+Kepala Seksi")
    api.register(session["id"], 2, name="Dewi Lestari", job_title="@Analis")
    response = api.client.get(f"{API}/sessions/{session['id']}/registrations.csv", headers=api.organiser)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    raw = response.get_data()
    assert raw.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert [r["name"] for r in rows] == ['\'=HYPERLINK("http://evil")', "Dewi Lestari"]
    assert [r["job_title"] for r in rows] == ["'+Kepala Seksi", "'@Analis"]
    assert rows[0]["phone"].startswith("'+62")  # a phone number in E.164 would be a formula too
    assert rows[0]["status"] == "confirmed"


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_the_migration_counts_what_the_foundation_stored_into_the_new_counters(tmp_path, database):
    from importlib import import_module

    from sqlalchemy import text

    from shared.config import load_settings
    from shared.migrations import upgrade

    def check(url):
        env = {"LABINOV_DATA_DIR": str(tmp_path)} | ({"LABINOV_REGISTRATION_DATABASE_URL": url} if url else {})
        runtime = import_module("services.registration.bootstrap").bootstrap(load_settings("registration", env))
        upgrade(runtime, "0004")
        with runtime.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO lab_sessions (id, title, starts_at, ends_at, location, capacity, created_at) "
                    "VALUES ('s1', 'Sosialisasi', '2027-03-01 01:00', '2027-03-01 04:00', 'Tarakan', 1, '2026-11-30')"
                )
            )
            for i, status in enumerate(["confirmed", "waitlisted", "waitlisted"]):
                person = participant(i)
                connection.execute(
                    text(
                        "INSERT INTO registrations (id, session_id, name, nip, email, phone, opd, position, status, "
                        "created_at) VALUES (:id, 's1', :name, :nip, :email, :phone, :opd, 'Analis', :status, :at)"
                    ),
                    {**person, "id": f"r{i}", "status": status, "at": f"2026-11-30 0{i}:00"},
                )
        upgrade(runtime)
        assert seat_problems(runtime, "s1") == [
            # the foundation wrote no events for rows made by hand; the counters are what is checked here
            f"registration r{i} is {status}; its last event says None"
            for i, status in enumerate(["confirmed", "waitlisted", "waitlisted"])
        ]
        assert waiting_places(runtime, "s1") == [1, 2]
        with runtime.reading() as uow:
            session = uow.session.get(LabSession, "s1")
            assert (session.confirmed_count, session.waitlisted_count, session.waitlist_sequence) == (1, 2, 2)
            assert (session.state, session.waitlist) == ("published", True)
            jobs = uow.session.execute(text("SELECT job_title FROM registrations")).scalars().all()
            assert jobs == ["Analis"] * 3
        runtime.engine.dispose()

    if database == "sqlite":
        check(None)
    else:
        with postgres_database() as url:
            check(url)
