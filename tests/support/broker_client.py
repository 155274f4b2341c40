"""Talking to the broker directly from a test: publish an event as a producer would, read a queue."""

from __future__ import annotations

from kombu import Connection, Queue

from shared.messaging.broker import connect
from shared.messaging.topology import EVENTS_EXCHANGE, declare_topology


def publish_raw(broker_url: str, body, routing_key: str, message_id: str | None = None, **kwargs) -> None:
    """Publish ``body`` to the events exchange exactly as given (no validation: tests send bad ones too)."""
    with connect(broker_url) as connection:
        declare_topology(connection.default_channel)
        connection.Producer().publish(
            body,
            exchange=EVENTS_EXCHANGE,
            routing_key=routing_key,
            message_id=message_id,
            delivery_mode=2,
            **kwargs,
        )


def drain_queue(broker_url: str, queue_name: str) -> list:
    """Take every message waiting in ``queue_name`` (acking them); returns kombu messages."""
    taken = []
    with Connection(broker_url) as connection:
        queue = Queue(queue_name, no_declare=True)(connection.default_channel)
        while (message := queue.get(accept=["json", "text/plain", "application/data"])) is not None:
            message.ack()
            taken.append(message)
    return taken


class QueueReader:
    """Collects what arrives on one queue across calls, for ``wait_until(lambda: reader.at_least(n))``."""

    def __init__(self, broker_url: str, queue_name: str) -> None:
        self.broker_url = broker_url
        self.queue_name = queue_name
        self.messages: list = []

    def at_least(self, count: int) -> list | None:
        self.messages += drain_queue(self.broker_url, self.queue_name)
        return self.messages if len(self.messages) >= count else None
