"""End to end through the real processes: a registration becomes a confirmation e-mail."""

from __future__ import annotations

import pytest
import requests

from tests.support.suite import participant
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


def test_registration_mails_the_participant_on_rabbitmq_and_postgres(
    rabbitmq, postgres_urls, smtp_server, suite_factory
):
    amqp_url, _vhost = rabbitmq
    suite = suite_factory(broker_url=amqp_url, database_urls=postgres_urls, smtp_url=smtp_server.url).start()
    session_id = suite.create_session(capacity=5)

    sari = participant(1, name="Sari Wulandari", email="sari@kaltaraprov.go.id")
    response = suite.register(session_id, sari)

    assert response.status_code == 201, response.text
    assert response.json()["status"] == "confirmed"
    mail = wait_until(lambda: smtp_server.to("sari@kaltaraprov.go.id"), what="the confirmation mail")
    assert "Sari Wulandari" in mail[0].get_body(preferencelist=("plain",)).get_content()
    assert "Sosialisasi Laboratorium Inovasi" in mail[0]["Subject"]
    deliveries = wait_until(
        lambda: [
            d
            for d in requests.get(
                suite.url("notification", "api/v1/deliveries"),
                params={"email": "sari@kaltaraprov.go.id"},
                headers=suite.organiser_headers(),
                timeout=5,
            ).json()
            if d["status"] == "sent"
        ],
        what="the delivery to be recorded as sent",
    )
    assert len(deliveries) == 1
    # the evaluation service received its own copy of the same event
    participants = wait_until(
        lambda: requests.get(
            suite.url("evaluation", "api/v1/participants"), headers=suite.organiser_headers(), timeout=5
        ).json(),
        what="evaluation's participant projection",
    )
    assert [p["nip"] for p in participants] == [sari["nip"]]
    # the correlation id of the request travels into the mail
    assert mail[0]["X-Request-ID"] == response.headers["X-Request-ID"]
