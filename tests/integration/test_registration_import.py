"""Bulk import of an agency's CSV, through the real API on PostgreSQL and SQLite: the same rules as the
form, line-by-line report, no duplicates on a second import, and a large file registered by the worker
with its progress visible all along."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from services.registration import domain
from services.registration.tables import Registration
from tests.support.registration_api import API, RegistrationApi
from tests.support.runtimes import migrated_runtime
from tests.support.suite import participant

HEADER = "nama;nip;email;ponsel;opd;jabatan\n"


def row(i: int, **overrides) -> str:
    person = {**participant(i), **overrides}
    return ";".join([person["name"], person["nip"], person["email"], person["phone"], person["opd"], "Analis"]) + "\n"


class Office(RegistrationApi):
    """An agency's sheet arriving at the organisers' office."""

    def session(self, capacity=100, **fields) -> str:
        return self.new_session(capacity, **{"title": "Sosialisasi", **fields})["id"]

    def upload(self, session_id, text: str):
        return self.client.post(
            f"{API}/sessions/{session_id}/imports",
            data=text.encode(),
            headers={**self.organiser, "Content-Type": "text/csv"},
        )

    def progress(self, session_id, import_id, lines="problems") -> dict:
        url = f"{API}/sessions/{session_id}/imports/{import_id}?lines={lines}&limit=500"
        response = self.client.get(url, headers=self.organiser)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def registered(self, session_id) -> int:
        with self.runtime.engine.connect() as connection:
            return connection.scalar(
                select(func.count()).select_from(Registration).where(Registration.session_id == session_id)
            )


@pytest.fixture
def office(database_url, tmp_path):
    runtime = migrated_runtime("registration", tmp_path, database_url)
    yield Office(runtime)
    runtime.engine.dispose()


def test_a_small_file_is_registered_at_once_and_bad_rows_are_reported_with_line_field_and_reason(office):
    session_id = office.session(capacity=2)
    sheet = HEADER + row(1) + row(2, nip="19850315201001100") + row(3, phone="12") + row(4) + row(5)
    response = office.upload(session_id, sheet)
    assert response.status_code == 201, response.get_json()
    job = response.get_json()
    assert job["state"] == "finished" and job["progress"] == 1.0
    assert (job["total"], job["done"], job["confirmed"], job["waitlisted"], job["invalid"]) == (5, 5, 2, 1, 2)
    assert job["failed"] == 2
    report = {line["line"]: line for line in job["lines"]}
    assert sorted(report) == [3, 4]
    assert report[3]["outcome"] == "invalid"
    assert report[3]["problems"] == [{"field": "nip", "reason": "NIP must be exactly 18 digits 0-9."}]
    assert [p["field"] for p in report[4]["problems"]] == ["phone"]
    assert office.registered(session_id) == 3
    every = office.progress(session_id, job["id"], lines="all")["lines"]
    assert [(line["line"], line["outcome"]) for line in every] == [
        (2, "confirmed"),
        (3, "invalid"),
        (4, "invalid"),
        (5, "confirmed"),
        (6, "waitlisted"),
    ]


def test_importing_the_same_file_again_registers_nobody_twice(office):
    session_id = office.session()
    sheet = HEADER + "".join(row(i) for i in range(1, 6)) + row(1, name="Sama NIP lagi")  # one NIP twice
    first = office.upload(session_id, sheet).get_json()
    assert (first["confirmed"], first["duplicates"]) == (5, 1)
    again = office.upload(session_id, sheet).get_json()
    assert again["state"] == "finished" and (again["confirmed"], again["duplicates"]) == (0, 6)
    assert {line["outcome"] for line in again["lines"]} == {"duplicate"}
    assert again["lines"][0]["problems"] == [{"field": "nip", "reason": "Already registered for this session."}]
    assert office.registered(session_id) == 5


def test_the_programme_s_rules_apply_to_imported_rows_too(office):
    programme = office.client.post(
        f"{API}/programmes",
        json={"name": "Labinov Kaltara", "year": 2027, "opds": ["Bappeda"], "opd_quota": None},
        headers=office.organiser,
    ).get_json()["id"]
    session_id = office.session(programme_id=programme)
    job = office.upload(session_id, HEADER + row(1, opd="Bappeda") + row(2, opd="Dinas Lain")).get_json()
    assert (job["confirmed"], job["invalid"]) == (1, 1)
    assert job["lines"][0]["problems"][0]["field"] == "opd"


def test_a_large_file_is_registered_by_the_worker_in_batches_with_its_progress_visible(office):
    session_id = office.session(capacity=100)
    count = domain.INLINE_IMPORT_LINES + domain.IMPORT_BATCH + 20
    sheet = HEADER + "".join(row(i) for i in range(1, count + 1))
    created = office.upload(session_id, sheet).get_json()
    assert (created["state"], created["total"], created["done"]) == ("queued", count, 0)
    seen = []
    while office.progress(session_id, created["id"])["state"] != "finished":
        assert domain.run_due_imports(office.runtime.unit_of_work, office.runtime.engine) == 1
        seen.append(office.progress(session_id, created["id"])["done"])
    assert seen == [domain.IMPORT_BATCH, 2 * domain.IMPORT_BATCH, count]
    final = office.progress(session_id, created["id"])
    assert (final["confirmed"], final["waitlisted"], final["progress"]) == (100, count - 100, 1.0)
    assert office.registered(session_id) == count
    assert domain.run_due_imports(office.runtime.unit_of_work, office.runtime.engine) == 0


def test_an_upload_larger_than_the_json_limit_is_taken_and_a_multipart_form_works_too(office):
    session_id = office.session(capacity=10)
    padding = "x" * 190  # long job titles make a file of ~70 KiB with few rows
    sheet = HEADER + "".join(row(i).replace("Analis", padding) for i in range(1, 351))
    assert len(sheet.encode()) > 64 * 1024
    response = office.client.post(
        f"{API}/sessions/{session_id}/imports",
        data={"file": (__import__("io").BytesIO(sheet.encode()), "dinkes.csv")},
        headers=office.organiser,
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["filename"] == "dinkes.csv" and response.get_json()["total"] == 350


def test_a_file_that_is_no_sheet_is_a_422_naming_the_file_and_another_body_a_415(office):
    session_id = office.session()
    missing = office.upload(session_id, "name,email\nA,e\n")
    assert missing.status_code == 422 and list(missing.get_json()["errors"]) == ["file"]
    json_body = office.client.post(f"{API}/sessions/{session_id}/imports", json={}, headers=office.organiser)
    assert json_body.status_code == 415
    too_large = office.upload(session_id, HEADER + "x" * (3 * 1024 * 1024))
    assert too_large.status_code == 413 and "2 MiB" in too_large.get_json()["detail"]


def test_an_organiser_uploads_a_large_file_on_the_page_and_watches_its_progress(office):
    import io
    import re

    from shared.pages import AUTH_COOKIE

    session_id = office.session(capacity=500)
    client = office.client
    client.set_cookie(AUTH_COOKIE, office.organiser["Authorization"].split()[1])
    page = client.get(f"/registration/admin/sessions/{session_id}", headers={"Accept": "text/html"})
    html = page.get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in html
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    sheet = HEADER + "".join(row(i).replace("Analis", "y" * 190) for i in range(1, 351))  # > 64 KiB
    uploaded = client.post(
        f"/registration/admin/sessions/{session_id}/imports",
        data={"csrf_token": csrf, "file": (io.BytesIO(sheet.encode()), "bappeda.csv")},
        content_type="multipart/form-data",
        headers={"Accept": "text/html"},
    )
    assert uploaded.status_code == 303, uploaded.get_data(as_text=True)[:500]
    progress_url = uploaded.headers["Location"]
    waiting = client.get(progress_url, headers={"Accept": "text/html"}).get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="2">' in waiting and "0 dari 350 baris selesai" in waiting
    while domain.run_due_imports(office.runtime.unit_of_work, office.runtime.engine):
        pass
    done = client.get(progress_url, headers={"Accept": "text/html"}).get_data(as_text=True)
    assert 'http-equiv="refresh"' not in done and "350 dari 350 baris selesai" in done
