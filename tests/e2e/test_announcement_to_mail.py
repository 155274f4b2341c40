"""An organiser's announcement reaches each registrant once, through the real worker processes."""

from __future__ import annotations

import collections

import pytest
import requests

from tests.support.suite import participant
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


def test_an_announcement_to_a_session_reaches_each_confirmed_registrant_once_with_a_one_click_opt_out(
    rabbitmq, postgres_urls, smtp_server, suite_factory
):
    amqp_url, _vhost = rabbitmq
    suite = suite_factory(broker_url=amqp_url, database_urls=postgres_urls, smtp_url=smtp_server.url).start()
    session_id = suite.create_session(capacity=3)
    people = [participant(300 + i) for i in range(4)]  # three confirmed, one waiting
    for person in people:
        assert suite.register(session_id, person).status_code == 201
    suite.wait_for_mail_to_settle(4)

    response = requests.post(
        suite.url("notification", "api/v1/announcements"),
        json={
            "subject": "Pengingat: {session_title}",
            "body": "Yth. {name}, sampai jumpa besok pukul 09.00.",
            "channels": ["email"],
            "audience": {"session_id": session_id, "statuses": ["confirmed"]},
        },
        headers=suite.organiser_headers(),
        timeout=10,
    )
    assert response.status_code == 201, response.text
    announcement = response.json()["id"]

    progress = wait_until(
        lambda: (
            answer := requests.get(
                suite.url("notification", f"api/v1/announcements/{announcement}"),
                headers=suite.organiser_headers(),
                timeout=10,
            ).json()
        )
        and answer["total"] == 3
        and answer["sent"] == 3
        and answer,
        timeout=60,
        what="the announcement to be sent to its three recipients",
    )
    assert progress["failed"] == 0
    reminders = [m for m in smtp_server.messages if str(m["Subject"]).startswith("Pengingat:")]
    assert collections.Counter(str(m["To"]) for m in reminders) == {p["email"]: 1 for p in people[:3]}
    assert all("One-Click" in str(m["List-Unsubscribe-Post"]) and m["List-Unsubscribe"] for m in reminders)
    assert "Yth. Peserta 300" in next(
        m.get_body(preferencelist=("plain",)).get_content() for m in reminders if people[0]["email"] in str(m["To"])
    )
