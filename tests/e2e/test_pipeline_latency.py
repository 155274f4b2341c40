"""End to end: the event → mail pipeline is driven by wake-ups, not by its polls.

Functional, not timed (the figures are in ``make bench``, part ``pipeline``): every relay and mail sender of
the suite is configured to poll once an hour, so a confirmation mail that arrives within a test's timeout —
for a registration made while the whole pipeline was idle — was carried through registration's relay, the
broker, notification's consumer and its mail sender by wake-ups alone.
"""

from __future__ import annotations

import pytest

from tests.support.suite import participant
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

#: No relay or mail sender polls within a test's lifetime.
AN_HOUR_OF_POLLING = {"LABINOV_RELAY_POLL_MS": "3600000", "LABINOV_MAIL_POLL_MS": "3600000"}


def _registrations_reach_the_mailbox(suite, smtp_server) -> None:
    session_id = suite.create_session(capacity=5)
    for i in (1, 2):  # the second one after the first mail: by then every loop of the pipeline is idle
        email = f"woken{i}@kaltaraprov.go.id"
        response = suite.register(session_id, participant(i, email=email))
        assert response.status_code == 201, response.text
        wait_until(lambda e=email: smtp_server.to(e), timeout=60, what=f"the confirmation mail to {email}")


def test_a_registration_is_mailed_by_wake_ups_alone_on_rabbitmq_and_postgres(
    rabbitmq, postgres_urls, smtp_server, suite_factory
):
    amqp_url, _vhost = rabbitmq
    suite = suite_factory(
        broker_url=amqp_url, database_urls=postgres_urls, smtp_url=smtp_server.url, extra_env=AN_HOUR_OF_POLLING
    ).start()
    _registrations_reach_the_mailbox(suite, smtp_server)


def test_a_registration_is_mailed_by_wake_ups_alone_on_the_embedded_defaults(smtp_server, suite_factory):
    suite = suite_factory(smtp_url=smtp_server.url, extra_env=AN_HOUR_OF_POLLING).start()
    _registrations_reach_the_mailbox(suite, smtp_server)
