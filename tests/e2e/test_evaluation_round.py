"""End to end through the real processes: a participant registers and submits a proposal; two evaluators
(not of that OPD) are auto-assigned and score through the API; the round closes; results are published and
``results.published`` leaves through the broker."""

from __future__ import annotations

import pytest
import requests
from kombu import Connection, Queue

from shared.events import make_event
from shared.messaging.topology import EVENTS_EXCHANGE
from tests.support.broker_client import drain_queue, publish_raw
from tests.support.suite import participant
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

SECTIONS = dict.fromkeys(
    (
        "summary",
        "background",
        "novelty",
        "implementation",
        "significance",
        "adaptability",
        "resources",
        "sustainability",
    ),
    "Layanan kesehatan keliling menjangkau desa terpencil setiap pekan.",
)
SCORES = {"novelty": 8, "effectiveness": 7, "benefit": 9, "replicability": 6, "sustainability": 7}
LISTENER = "test-results-listener"


def test_a_proposal_is_submitted_assigned_scored_and_its_result_published(rabbitmq, suite_factory):
    amqp_url, _vhost = rabbitmq
    with Connection(amqp_url) as connection:  # stands in for the notification service's subscription
        Queue(LISTENER, exchange=EVENTS_EXCHANGE, routing_key="results.published")(connection.default_channel).declare()
    suite = suite_factory(broker_url=amqp_url).start()
    session_id = suite.create_session(capacity=5)
    registered = suite.register(session_id, participant(1, opd="Dinas Kesehatan"))
    assert registered.status_code == 201, registered.text
    team = {"Authorization": "Bearer " + registered.json()["manage_url"].split("token=")[1]}
    evaluation = suite.url("evaluation", "api/v1")
    tokens = {}
    for number, opd in ((1, "Bappeda"), (2, "Dinas Pendidikan")):
        email, password = f"penilai{number}@kaltaraprov.go.id", "rahasia-penilai-2027"
        suite.labinov(
            "user",
            "create",
            "--role",
            "evaluator",
            "--name",
            f"Penilai {number}",
            "--email",
            email,
            "--password",
            password,
        )
        token = requests.post(
            suite.url("registration", "api/v1/auth/token"), json={"email": email, "password": password}, timeout=10
        ).json()["access_token"]
        account_id = _subject(token)
        tokens[account_id] = {"Authorization": f"Bearer {token}"}
        # until registration publishes account.created itself, the test publishes what it will say
        publish_raw(
            amqp_url,
            make_event(
                "account.created",
                {
                    "account_id": account_id,
                    "email": email,
                    "name": f"Penilai {number}",
                    "role": "evaluator",
                    "opd": opd,
                },
                source="/registration",
                correlation_id="e2e",
            ),
            "account.created",
        )
    wait_until(
        lambda: len(requests.get(f"{evaluation}/evaluators", headers=suite.organiser_headers(), timeout=5).json()) == 2,
        what="the evaluators in evaluation's projection",
    )
    created = wait_until(
        lambda: (
            (
                r := requests.post(
                    f"{evaluation}/proposals",
                    json={
                        "title": "Puskesmas Keliling",
                        "category": "Pelayanan publik",
                        "started_on": "2026-01-15",
                        "members": [{"name": "Sari"}],
                        "sections": SECTIONS,
                    },
                    headers=team,
                    timeout=10,
                )
            ).status_code
            == 201
            and r
        ),
        what="the proposal (once the registration reached evaluation)",
    ).json()
    assert requests.post(f"{evaluation}/proposals/{created['id']}/submit", headers=team, timeout=10).status_code == 200
    round_ = requests.post(
        f"{evaluation}/rounds",
        json={"name": "Desk", "kind": "rubric", "evaluators_per_proposal": 2, "advancement": {"rule": "top_n", "n": 1}},
        headers=suite.organiser_headers(),
        timeout=10,
    ).json()
    assigned = requests.post(
        f"{evaluation}/rounds/{round_['id']}/assignments",
        json={"auto": True},
        headers=suite.organiser_headers(),
        timeout=10,
    )
    assert assigned.status_code == 201 and len(assigned.json()) == 2, assigned.text
    for headers in tokens.values():
        [mine] = requests.get(f"{evaluation}/assignments", headers=headers, timeout=10).json()
        scored = requests.put(
            f"{evaluation}/assignments/{mine['id']}/evaluation",
            json={"scores": SCORES, "comment": "Baik"},
            headers=headers,
            timeout=10,
        )
        assert scored.status_code == 200, scored.text
        assert (
            requests.get(f"{evaluation}/rounds/{round_['id']}/results", headers=headers, timeout=10).status_code == 403
        )
    assert (
        requests.post(
            f"{evaluation}/rounds/{round_['id']}/close", headers=suite.organiser_headers(), timeout=10
        ).json()["state"]
        == "closed"
    )
    results = requests.get(
        f"{evaluation}/rounds/{round_['id']}/results", headers=suite.organiser_headers(), timeout=10
    ).json()
    assert results["ranking"][0]["proposal_id"] == created["id"] and results["ranking"][0]["mean"] == 7.4
    assert (
        requests.post(
            f"{evaluation}/rounds/{round_['id']}/publish", headers=suite.organiser_headers(), timeout=10
        ).status_code
        == 200
    )
    [message] = wait_until(lambda: drain_queue(amqp_url, LISTENER) or None, what="results.published on the broker")
    assert message.payload["data"]["proposal_id"] == created["id"]
    assert message.payload["data"]["team_email"] == "peserta1@kaltaraprov.go.id"


def _subject(token: str) -> str:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})["sub"]
