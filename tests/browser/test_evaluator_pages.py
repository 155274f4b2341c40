"""An evaluation round in a real browser on a 360-px phone (see conftest.py for Chromium and the screenshots):
an evaluator signs in, opens their assignments and a proposal of a blind round (no team members shown),
types a score out of scale and is told beside it with everything typed kept, corrects it, saves and revises;
after the round closes an organiser opens the results page: the ranking table and the per-criterion charts,
drawn as SVG on the server.

Unlike the other browser tests, these need events to flow (the team's registration and the evaluator's
``account.created`` reach evaluation through its worker), so this module starts registration's and
evaluation's workers beside the web processes and the gateway.
"""

from __future__ import annotations

import re
import sys

import jwt
import pytest
import requests

from tests.browser.conftest import PHONE
from tests.support.suite import ORGANISER, Suite, participant
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

NO_SIDEWAYS_SCROLL = "document.documentElement.scrollWidth <= window.innerWidth"
EVALUATOR = {"email": "penilai.bappeda@kaltaraprov.go.id", "password": "rahasia-penilai-2027"}
TEAM_MEMBER = "Sari Wulandari"
TITLE = "Puskesmas Keliling Desa Terpencil"
SECTIONS = {
    name: f"{name.capitalize()}: layanan kesehatan keliling menjangkau desa terpencil di Kabupaten Malinau setiap pekan."
    for name in (
        "summary",
        "background",
        "novelty",
        "implementation",
        "significance",
        "adaptability",
        "resources",
        "sustainability",
    )
}
SCORES = {"novelty": "8", "effectiveness": "7", "benefit": "9", "replicability": "6", "sustainability": "7"}
CRITERION_LABELS = {
    "novelty": "Kebaruan",
    "effectiveness": "Efektif",
    "benefit": "Bermanfaat",
    "replicability": "Dapat direplikasi",
    "sustainability": "Berkelanjutan",
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The suite behind the gateway, with the workers that carry registration's events to evaluation."""
    suite = Suite(tmp_path_factory.mktemp("browser-evaluation"), extra_env={"LABINOV_PUBLIC_RATE_LIMIT": "off"})
    try:
        suite.start(workers=("registration", "evaluation"))
        suite._spawn("gateway", [sys.executable, "-m", "services.cli", "gateway"], "registration")
        wait_until(
            lambda: requests.get(f"http://127.0.0.1:{suite.port}/registration/health/live", timeout=2).ok,
            timeout=60,
            what="the gateway to reach registration",
        )
        yield suite
    except BaseException:
        print(suite.log_tails())
        raise
    finally:
        suite.stop()


@pytest.fixture(scope="module")
def blind_round(suite):
    """A team's submitted proposal in an open blind desk round, assigned to one evaluator of another OPD."""
    evaluation = suite.url("evaluation", "api/v1")
    session_id = suite.create_session(capacity=5, title="Sosialisasi proposal inovasi")
    registered = suite.register(session_id, participant(401, opd="Dinas Kesehatan"))
    assert registered.status_code == 201, registered.text
    team = {"Authorization": f"Bearer {registered.json()['manage_token']}"}
    suite.labinov(
        "user", "create", "--role", "evaluator", "--name", "Penilai Bappeda", "--opd", "Bappeda",
        "--email", EVALUATOR["email"], "--password", EVALUATOR["password"],
    )  # fmt: skip
    token = requests.post(suite.url("registration", "api/v1/auth/token"), json=EVALUATOR, timeout=10).json()
    evaluator = {"Authorization": f"Bearer {token['access_token']}"}
    evaluator_id = jwt.decode(token["access_token"], options={"verify_signature": False})["sub"]
    wait_until(
        lambda: [
            e
            for e in requests.get(f"{evaluation}/evaluators", headers=suite.organiser_headers(), timeout=5).json()
            if e["id"] == evaluator_id
        ],
        what="the evaluator in evaluation's projection (registration's account.created)",
    )
    proposal = wait_until(
        lambda: (
            (
                r := requests.post(
                    f"{evaluation}/proposals",
                    json={
                        "title": TITLE,
                        "category": "Pelayanan publik",
                        "started_on": "2026-01-15",
                        "members": [{"name": TEAM_MEMBER, "position": "Kepala Puskesmas"}],
                        "sections": SECTIONS,
                    },
                    headers=team,
                    timeout=10,
                )
            ).status_code
            == 201
            and r.json()
        ),
        what="the proposal (once the registration reached evaluation)",
    )
    submitted = requests.post(f"{evaluation}/proposals/{proposal['id']}/submit", headers=team, timeout=10)
    assert submitted.status_code == 200, submitted.text
    round_ = requests.post(
        f"{evaluation}/rounds",
        json={
            "name": "Penilaian desk",
            "kind": "rubric",
            "evaluators_per_proposal": 1,
            "blind": True,
            "advancement": {"rule": "top_n", "n": 1},
        },
        headers=suite.organiser_headers(),
        timeout=10,
    ).json()
    assigned = requests.post(
        f"{evaluation}/rounds/{round_['id']}/assignments",
        json={"auto": True},
        headers=suite.organiser_headers(),
        timeout=10,
    )
    assert assigned.status_code == 201 and len(assigned.json()) == 1, assigned.text
    return {"round_id": round_["id"], "assignment_id": assigned.json()[0]["id"], "evaluator": evaluator}


def expect(locator):
    """Playwright's waiting assertions, imported here: without the package the chromium fixture skips (or fails
    under CI) with the reason, rather than the module failing to import."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def sign_in(page, site: str, path: str, account: dict) -> None:
    """Open ``path``; the page sends a signed-out visitor to the sign-in page, which sends them back."""
    page.goto(f"{site}{path}")
    page.wait_for_url(re.compile(r"/registration/login\?next="))
    page.get_by_label("E-mail").fill(account["email"])
    page.get_by_label("Kata sandi").fill(account["password"])
    page.get_by_role("button", name="Masuk").click()
    page.wait_for_url(re.compile(re.escape(path) + "$"))


def test_an_evaluator_is_told_a_score_out_of_scale_beside_it_then_saves_and_revises(
    suite, site, phone, screenshot, blind_round
):
    sign_in(phone, site, "/evaluation/assignments", EVALUATOR)
    assert phone.get_by_role("heading", name="Tugas penilaian saya").is_visible()
    assert "Belum dinilai" in phone.locator("main").inner_text()
    assert phone.evaluate(NO_SIDEWAYS_SCROLL)
    phone.get_by_role("link", name=TITLE).click()
    phone.wait_for_url(re.compile(rf"/evaluation/assignments/{blind_round['assignment_id']}$"))

    page_text = phone.locator("main").inner_text()
    assert TEAM_MEMBER not in page_text and "Kepala Puskesmas" not in page_text  # a blind round
    assert phone.get_by_role("heading", name="Tim").count() == 0
    assert SECTIONS["novelty"] in page_text
    for key, value in {**SCORES, "novelty": "11"}.items():
        phone.get_by_label(CRITERION_LABELS[key]).fill(value)
    phone.get_by_label("Komentar").fill("Inovasi menjangkau warga desa;\nperlu data biaya per kunjungan.")
    phone.get_by_role("button", name="Simpan penilaian").click()

    novelty = phone.get_by_label("Kebaruan")
    assert phone.locator("#e-novelty").inner_text() == "Harus antara 1 dan 10."
    assert novelty.get_attribute("aria-invalid") == "true" and novelty.input_value() == "11"
    assert phone.get_by_label("Bermanfaat").input_value() == "9"
    assert phone.get_by_label("Komentar").input_value() == (
        "Inovasi menjangkau warga desa;\nperlu data biaya per kunjungan."
    )
    assert phone.get_by_role("alert").inner_text() == "Beberapa isian perlu diperbaiki; lihat pesan di bawahnya."
    assert phone.url.endswith("#evaluation")  # the refused form opens at the form, not at the proposal's top
    expect(phone.get_by_role("alert")).to_be_in_viewport()
    assert phone.evaluate(NO_SIDEWAYS_SCROLL)
    novelty.scroll_into_view_if_needed()
    screenshot(phone, "scoring-error-360")

    novelty.fill("8")
    phone.get_by_role("button", name="Simpan penilaian").click()
    phone.wait_for_url(
        re.compile(rf"/evaluation/assignments/{blind_round['assignment_id']}#evaluation$")
    )  # saved: back at the form
    assert "Penilaian Anda tersimpan" in phone.locator("main").inner_text()
    assert phone.locator("#evaluation-saved").inner_text().startswith("Tersimpan: revisi 1, ")
    expect(phone.locator("#evaluation-saved")).to_be_in_viewport()
    assert phone.locator("#e-novelty").count() == 0 and novelty.input_value() == "8"
    assert phone.evaluate(NO_SIDEWAYS_SCROLL)
    screenshot(phone, "scoring-saved-360")

    novelty.fill("9")
    phone.get_by_role("button", name="Simpan revisi").click()
    expect(phone.locator("#evaluation-saved")).to_contain_text("Tersimpan: revisi 2, ")
    [mine] = requests.get(
        suite.url("evaluation", "api/v1/assignments"), headers=blind_round["evaluator"], timeout=10
    ).json()
    assert mine["evaluation"]["revision"] == 2 and mine["evaluation"]["scores"]["novelty"] == 9
    assert mine["evaluation"]["comment"] == "Inovasi menjangkau warga desa;\nperlu data biaya per kunjungan."
    phone.get_by_role("link", name="Tugas penilaian saya").first.click()
    assert "Sudah dinilai (revisi 2)" in phone.locator("main").inner_text()
    refused = phone.goto(f"{site}/evaluation/rounds/{blind_round['round_id']}/results")  # organisers' only
    assert refused.status == 403 and TITLE not in phone.locator("main").inner_text()


def test_an_organiser_reads_the_closed_round_s_ranking_and_charts_on_a_phone(
    suite, site, chromium, screenshot, blind_round
):
    scored = requests.put(
        suite.url("evaluation", f"api/v1/assignments/{blind_round['assignment_id']}/evaluation"),
        json={"scores": {key: float(value) for key, value in SCORES.items()}, "comment": "Baik."},
        headers=blind_round["evaluator"],
        timeout=10,
    )
    assert scored.status_code == 200, scored.text  # scored whether or not the evaluator's test ran first
    closed = requests.post(
        suite.url("evaluation", f"api/v1/rounds/{blind_round['round_id']}/close"),
        headers=suite.organiser_headers(),
        timeout=10,
    )
    assert closed.status_code == 200, closed.text
    context = chromium.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        path = f"/evaluation/rounds/{blind_round['round_id']}/results"
        sign_in(page, site, path, ORGANISER)
        assert page.get_by_role("heading", name=re.compile(r"^Hasil")).is_visible()
        assert "Tahap ini sudah ditutup." in page.locator("main").inner_text()
        ranking = page.get_by_role("table")
        header = ranking.locator("thead").inner_text()
        assert "Peringkat" in header
        [row] = ranking.locator("tbody tr").all()
        assert row.locator("td").first.inner_text() == "1" and TITLE in row.inner_text()
        assert page.get_by_role("heading", name="Sebaran nilai per kriteria").is_visible()
        charts = page.locator("figure svg")
        assert charts.count() == 5
        for i in range(5):
            box = charts.nth(i).bounding_box()
            assert box["width"] > 100 and box["x"] + box["width"] <= PHONE["width"]
        assert page.get_by_role("img", name="Kebaruan").is_visible()
        assert page.evaluate(NO_SIDEWAYS_SCROLL)
        screenshot(page, "results-360")
        csv = page.get_by_role("link", name=re.compile("CSV"))
        assert csv.get_attribute("href").endswith("/results.csv")
    finally:
        context.close()
