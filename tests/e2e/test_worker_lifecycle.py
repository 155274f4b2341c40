"""A worker process stops promptly on SIGTERM — also while its broker is unreachable."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.support.servers import free_port
from tests.support.suite import Suite
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


def test_a_worker_stops_within_seconds_of_sigterm_while_the_broker_is_away(tmp_path):
    suite = Suite(tmp_path, broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}//")
    suite.labinov("migrate", "notification")
    worker = suite.start_worker("notification")
    log_file = suite.logs / "notification-worker.log"
    wait_until(lambda: "Broker connection error" in log_file.read_text(), what="the worker to try the broker")
    assert worker.poll() is None, suite.log_tails()

    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    try:
        code = worker.wait(8)
    except subprocess.TimeoutExpired:
        worker.kill()
        pytest.fail("the worker did not stop within 8 s of SIGTERM")
    assert code == 0
    assert time.monotonic() - started < 8
    log = log_file.read_text()
    assert "worker stopped" in log
    assert "crashed" not in log
