"""The broker topology of the whole suite, declared in this one place.

* ``labinov.events`` — a durable topic exchange for domain events; routing key = event type.
* One durable queue per consuming service, ``<service>-events``, bound to the event types it handles.
  Every instance of a service competes on that queue; every service gets its own copy of an event.
* ``labinov.retry`` — a direct exchange. A message whose handler failed comes back to exactly one service's
  queue (routing key = queue name) after a delay. The delay is not a broker feature: the consumer writes a
  retry row with a "not before" time into its own outbox and the relay publishes it when due, so it works
  the same on RabbitMQ, the embedded Redis and ``memory://``.
* ``labinov.dead`` — a direct exchange to each service's ``<service>-dead`` queue: messages that do not fit
  the catalogue, or still fail after the last attempt, wait there for a person.

Every process declares the whole topology at start-up, so a producer that starts before a consumer still
routes its events to the consumer's queue (a topic exchange drops what no queue is bound for).
On RabbitMQ the queues are quorum queues (replicated, and they count deliveries).
"""

from __future__ import annotations

from kombu import Connection, Exchange, Queue, binding

EVENTS_EXCHANGE = Exchange("labinov.events", type="topic", durable=True)
RETRY_EXCHANGE = Exchange("labinov.retry", type="direct", durable=True)
DEAD_EXCHANGE = Exchange("labinov.dead", type="direct", durable=True)
EXCHANGES = {e.name: e for e in (EVENTS_EXCHANGE, RETRY_EXCHANGE, DEAD_EXCHANGE)}

#: Which event types each consuming service receives. Each service's handlers must match its line here
#: (a test checks it), so this table is the suite's wiring diagram.
SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    "notification": (
        "registration.confirmed",
        "registration.waitlisted",
        "registration.promoted",
        "registration.cancelled",
        "session.changed",
        "session.cancelled",
        "participant.checked_in",
        "proposal.submitted",
        "evaluation.assigned",
        "results.published",
        "objection.answered",
    ),
    "evaluation": (
        "registration.confirmed",
        "registration.promoted",
        "registration.cancelled",
        "account.created",
        "account.changed",
    ),
}


def events_queue_name(service: str) -> str:
    return f"{service}-events"


def dead_queue_name(service: str) -> str:
    return f"{service}-dead"


def _queue_arguments(connection: Connection) -> dict[str, str]:
    if connection.transport.driver_type == "amqp":  # RabbitMQ
        return {"x-queue-type": "quorum"}
    return {}


def events_queue(service: str, connection: Connection) -> Queue:
    """The queue ``service`` consumes from, bound to its event types and to its retry key."""
    name = events_queue_name(service)
    bindings = [
        *(binding(EVENTS_EXCHANGE, routing_key=key) for key in SUBSCRIPTIONS.get(service, ())),
        binding(RETRY_EXCHANGE, routing_key=name),
    ]
    return Queue(name, bindings=bindings, durable=True, queue_arguments=_queue_arguments(connection))


def dead_queue(service: str, connection: Connection) -> Queue:
    return Queue(
        dead_queue_name(service),
        exchange=DEAD_EXCHANGE,
        routing_key=service,
        durable=True,
        queue_arguments=_queue_arguments(connection),
    )


def declare_topology(channel) -> None:
    """Declare every exchange, queue and binding of the suite on ``channel`` (idempotent; safe anywhere)."""
    connection = channel.connection.client  # the kombu Connection this channel belongs to
    for exchange in EXCHANGES.values():
        exchange(channel).declare()
    for service in SUBSCRIPTIONS:
        for queue in (events_queue(service, connection), dead_queue(service, connection)):
            queue(channel).declare()
