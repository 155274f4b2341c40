"""End to end through the real processes: a participant registers and submits a proposal; two evaluators
(not of that OPD), created with ``labinov user create`` and known to evaluation only from registration's
``account.created``, are auto-assigned and score through the API; the round closes; results are published,
``results.published`` leaves through the broker and the team's result mail reaches the SMTP sink."""

from __future__ import annotations

import pytest
import requests
from kombu import Connection, Queue

from shared.messaging.topology import EVENTS_EXCHANGE
from tests.support.broker_client import drain_queue
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
ROUND_NAME = "Penilaian desk 2027"


def test_a_proposal_is_submitted_assigned_scored_and_its_result_mailed_to_the_team(
    rabbitmq, smtp_server, suite_factory
):
    amqp_url, _vhost = rabbitmq
    with Connection(amqp_url) as connection:  # stands in for the notification service's subscription
        Queue(LISTENER, exchange=EVENTS_EXCHANGE, routing_key="results.published")(connection.default_channel).declare()
    suite = suite_factory(broker_url=amqp_url, smtp_url=smtp_server.url).start()
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
            "--opd",
            opd,
        )
        token = requests.post(
            suite.url("registration", "api/v1/auth/token"), json={"email": email, "password": password}, timeout=10
        ).json()["access_token"]
        tokens[_subject(token)] = {"Authorization": f"Bearer {token}"}
    # registration's own account.created (through its outbox and the broker) is how evaluation knows them
    evaluators = wait_until(
        lambda: (
            len(found := requests.get(f"{evaluation}/evaluators", headers=suite.organiser_headers(), timeout=5).json())
            == 2
            and found
        ),
        what="the evaluators in evaluation's projection",
    )
    assert {(e["id"], e["opd"]) for e in evaluators} == {
        (account_id, opd) for account_id, opd in zip(tokens, ("Bappeda", "Dinas Pendidikan"), strict=True)
    }
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
        json={
            "name": ROUND_NAME,
            "kind": "rubric",
            "evaluators_per_proposal": 2,
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
    # notification heard results.published too, and mailed the team its rank and that it advances (the team
    # also has the mails of its registration and of its proposal's receipt: the result's names the round)
    [mail] = wait_until(
        lambda: [m for m in smtp_server.to("peserta1@kaltaraprov.go.id") if ROUND_NAME in m["Subject"]],
        what="the team's result mail",
    )
    text = _plain_text(mail)
    assert "Peringkat: 1 dari 1" in text and "LOLOS" in text and "Rank: 1 of 1" in text


def _plain_text(mail) -> str:
    part = mail.get_body(preferencelist=("plain",)) if mail.is_multipart() else mail
    return part.get_content()


def _subject(token: str) -> str:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})["sub"]
