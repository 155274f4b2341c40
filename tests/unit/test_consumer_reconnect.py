"""The consumer waits between attempts to reach the broker by the one backoff rule, and stops while waiting."""

from __future__ import annotations

import threading
import time

import pytest
from kombu import Connection

from shared.backoff import Backoff
from shared.messaging import consumer
from shared.messaging.consumer import CONSUMER_RECONNECT, _QueueConsumer, _Stopping
from tests.support.servers import free_port


class _RecordingConsumer(_QueueConsumer):
    def __init__(self, connection, stop, stop_after: int) -> None:
        super().__init__(connection, processor=None, stop=stop)
        self.waits: list[float] = []
        self.stop_after = stop_after

    def on_connection_error(self, exc, interval) -> None:
        self.waits.append(interval)
        if len(self.waits) == self.stop_after:
            self.stop.set()


def test_a_consumer_that_cannot_reach_the_broker_backs_off_and_gives_up_at_once_when_stopped(monkeypatch):
    hundredfold_faster = Backoff(
        base=CONSUMER_RECONNECT.base / 100, factor=2, cap=CONSUMER_RECONNECT.cap / 100, jitter=CONSUMER_RECONNECT.jitter
    )
    monkeypatch.setattr(consumer, "CONSUMER_RECONNECT", hundredfold_faster)
    nowhere = Connection(f"amqp://guest:guest@127.0.0.1:{free_port()}//", connect_timeout=1)
    stop = threading.Event()
    reconnecting = _RecordingConsumer(nowhere, stop, stop_after=4)

    started = time.monotonic()
    with pytest.raises(_Stopping), reconnecting.establish_connection():
        pass

    assert time.monotonic() - started < 2
    plain = [0.01, 0.02, 0.04, 0.05]  # CONSUMER_RECONNECT / 100 without jitter: 1 s, 2 s, 4 s, 5 s
    assert len(reconnecting.waits) == 4
    assert all(full / 2 <= wait <= full for wait, full in zip(reconnecting.waits, plain, strict=True))
