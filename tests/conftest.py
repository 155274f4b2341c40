"""Fixtures shared by every test: real servers (PostgreSQL, RabbitMQ, SMTP), each test isolated in its own
database, vhost and data folder."""

from __future__ import annotations

import pytest

from tests.support.servers import postgres_database, rabbitmq_vhost
from tests.support.smtp import SmtpServer
from tests.support.suite import Suite


@pytest.fixture
def postgres_url():
    with postgres_database() as url:
        yield url


@pytest.fixture
def postgres_urls():
    """One database per service, as in production."""
    with postgres_database() as r, postgres_database() as n, postgres_database() as e:
        yield {"registration": r, "notification": n, "evaluation": e}


@pytest.fixture
def rabbitmq():
    """``(amqp url, vhost)`` of a vhost of this test's own."""
    with rabbitmq_vhost() as value:
        yield value


@pytest.fixture
def smtp_server():
    with SmtpServer() as server:
        yield server


@pytest.fixture
def suite_factory(tmp_path, request):
    """Build :class:`Suite` instances; stops them all and prints their logs if the test failed."""
    suites: list[Suite] = []

    def make(**kwargs) -> Suite:
        suite = Suite(tmp_path / f"suite{len(suites)}", **kwargs)
        suites.append(suite)
        return suite

    yield make
    for suite in suites:
        suite.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for suite in suites:
            print(suite.log_tails())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
