"""What the consumer does with one message (shared.messaging.consumer.EventProcessor), on a real SQLite database.

The notification service is the subject: its handlers turn registration events into pending deliveries.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from services.notification.handlers import HANDLERS
from services.notification.tables import Delivery, Recipient
from shared.clock import utcnow
from shared.events import make_event
from shared.messaging.consumer import ATTEMPT_HEADER, ERROR_HEADER, EventProcessor


@pytest.fixture
def runtime(runtime_for):
    return runtime_for("notification")


@pytest.fixture
def event(registration_data) -> dict:
    """A registration.confirmed message body as it arrives from the broker."""
    envelope = make_event("registration.confirmed", registration_data(), source="/registration", correlation_id="c-1")
    return json.loads(json.dumps(envelope))


def processor(runtime, handlers=HANDLERS, max_attempts=None) -> EventProcessor:
    return EventProcessor(
        service="notification",
        handlers=handlers,
        unit_of_work=runtime.unit_of_work,
        inbox=runtime.inbox,
        max_attempts=max_attempts or runtime.settings.max_handler_attempts,
    )


def count(runtime, table) -> int:
    with runtime.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def outbox_rows(runtime) -> list[dict]:
    with runtime.engine.connect() as connection:
        rows = connection.execute(select(runtime.outbox).order_by(runtime.outbox.c.id)).mappings().all()
    return [{**row, "headers": json.loads(row["headers"]), "payload": json.loads(row["payload"])} for row in rows]


def failing_handler(uow, event):
    """Writes a recipient, then fails: nothing it wrote may survive."""
    uow.session.add(Recipient(email="ghost@example.org", name="Ghost", language="id", updated_at=datetime.now(UTC)))
    uow.session.flush()
    raise RuntimeError("template store unavailable")


def test_an_event_delivered_twice_queues_one_mail(runtime, event):
    consumer = processor(runtime)

    assert consumer.process(event, {}) == "handled"
    assert consumer.process(event, {}) == "duplicate"

    assert count(runtime, Delivery.__table__) == 1
    assert count(runtime, runtime.inbox) == 1
    assert outbox_rows(runtime) == []


@pytest.mark.parametrize("body", [{"hello": "world"}, "not an event", None])
def test_a_message_that_does_not_fit_the_catalogue_goes_straight_to_the_dead_letter_queue(runtime, body):
    assert processor(runtime).process(body, None) == "dead"

    [row] = outbox_rows(runtime)
    assert (row["exchange"], row["routing_key"]) == ("labinov.dead", "notification")
    assert row["headers"][ATTEMPT_HEADER] == 1
    assert row["headers"][ERROR_HEADER]
    assert row["payload"] == body
    assert count(runtime, Delivery.__table__) == 0


def test_an_event_nobody_here_handles_is_dead_lettered(runtime):
    envelope = make_event(
        "notification.failed",
        {"delivery_id": "d-1", "channel": "email", "recipient": "a@b.id", "template": "t"},
        source="/notification",
        correlation_id="c-2",
    )
    assert processor(runtime).process(json.loads(json.dumps(envelope)), {}) == "dead"
    [row] = outbox_rows(runtime)
    assert row["exchange"] == "labinov.dead" and "no handler" in row["headers"][ERROR_HEADER]


def test_a_failing_handler_is_retried_later_through_the_outbox(runtime, event):
    consumer = processor(runtime, {"registration.confirmed": failing_handler}, max_attempts=5)

    assert consumer.process(event, {ATTEMPT_HEADER: 1}) == "retried"

    [row] = outbox_rows(runtime)
    assert (row["exchange"], row["routing_key"]) == ("labinov.retry", "notification-events")
    assert row["headers"][ATTEMPT_HEADER] == 2
    assert "template store unavailable" in row["headers"][ERROR_HEADER]
    assert row["not_before"] > utcnow()
    assert row["payload"] == event and row["event_id"] == event["id"]


def test_a_message_without_an_attempt_header_counts_as_the_first_attempt(runtime, event):
    processor(runtime, {"registration.confirmed": failing_handler}, max_attempts=5).process(event, None)
    assert outbox_rows(runtime)[0]["headers"][ATTEMPT_HEADER] == 2


def test_the_last_attempt_that_fails_goes_to_the_dead_letter_queue(runtime, event):
    consumer = processor(runtime, {"registration.confirmed": failing_handler}, max_attempts=3)

    assert consumer.process(event, {ATTEMPT_HEADER: 3}) == "dead"

    [row] = outbox_rows(runtime)
    assert (row["exchange"], row["routing_key"]) == ("labinov.dead", "notification")
    assert row["headers"][ATTEMPT_HEADER] == 3
    assert "template store unavailable" in row["headers"][ERROR_HEADER]


def test_nothing_a_failing_handler_wrote_survives(runtime, event):
    processor(runtime, {"registration.confirmed": failing_handler}).process(event, {})

    assert count(runtime, Recipient.__table__) == 0
    assert count(runtime, runtime.inbox) == 0, "a failed event must not be marked as handled"


def test_an_event_that_failed_once_is_handled_when_its_retry_succeeds(runtime, event):
    processor(runtime, {"registration.confirmed": failing_handler}).process(event, {})
    assert processor(runtime).process(event, {ATTEMPT_HEADER: 2}) == "handled"
    assert count(runtime, Delivery.__table__) == 1


# A message whose x-labinov-attempt is not a number (say, published by hand from the RabbitMQ console)
# counts as a first attempt: it is settled (here: retried as attempt 2), not requeued forever.
@pytest.mark.parametrize("attempt", ["first", None, "-3"])
def test_a_message_with_an_unreadable_attempt_header_counts_as_the_first_attempt(runtime, event, attempt):
    outcome = processor(runtime, {"registration.confirmed": failing_handler}).process(event, {ATTEMPT_HEADER: attempt})
    assert outcome == "retried"
    [retry] = outbox_rows(runtime)
    assert retry["headers"][ATTEMPT_HEADER] == 2


# --- batches: the messages already here, in one transaction -------------------------------------------------


@pytest.fixture
def events(registration_data):
    """``events(n)``: n registration.confirmed message bodies, each its own registration and address."""

    def make(n: int) -> list[dict]:
        made = []
        for i in range(1, n + 1):
            data = registration_data(registration_id=f"7d1c1a8e-0000-4000-8000-{i:012d}", email=f"p{i}@kaltara.id")
            made.append(
                json.loads(
                    json.dumps(
                        make_event("registration.confirmed", data, source="/registration", correlation_id=f"c-{i}"),
                        default=str,
                    )
                )
            )
        return made

    return make


def fails_for(email: str):
    """HANDLERS' registration handler, except that it writes and then fails for ``email``."""

    def handle(uow, event):
        HANDLERS["registration.confirmed"](uow, event)
        if event.data["email"] == email:
            uow.session.flush()
            raise RuntimeError("template store unavailable")

    return {"registration.confirmed": handle}


def deliveries_to(runtime) -> list[str]:
    with runtime.engine.connect() as connection:
        return sorted(connection.scalars(select(Delivery.recipient)))


def test_a_batch_handles_each_new_event_once_and_a_redelivered_one_is_a_duplicate(runtime, events):
    first, second, third = events(3)
    consumer = processor(runtime)
    assert consumer.process(second, {}) == "handled"  # handled before: this batch brings it again

    outcomes = consumer.process_batch([(first, {}), (second, {}), (third, {})])

    assert outcomes == ["handled", "duplicate", "handled"]
    assert deliveries_to(runtime) == ["p1@kaltara.id", "p2@kaltara.id", "p3@kaltara.id"]
    assert count(runtime, runtime.inbox) == 3


def test_the_same_event_twice_in_one_batch_is_handled_once(runtime, events):
    [event] = events(1)
    other = events(2)[1]

    assert processor(runtime).process_batch([(event, {}), (other, {}), (event, {})]) == [
        "handled",
        "handled",
        "duplicate",
    ]
    assert deliveries_to(runtime) == ["p1@kaltara.id", "p2@kaltara.id"]


def test_a_failing_event_in_a_batch_is_retried_alone_and_the_others_are_handled(runtime, events):
    batch = events(3)
    consumer = processor(runtime, fails_for("p2@kaltara.id"), max_attempts=5)

    outcomes = consumer.process_batch([(body, {ATTEMPT_HEADER: 1}) for body in batch])

    assert outcomes == ["handled", "retried", "handled"]
    assert deliveries_to(runtime) == ["p1@kaltara.id", "p3@kaltara.id"], "nothing of the failing event is written"
    with runtime.engine.connect() as connection:
        inbox = set(connection.scalars(select(runtime.inbox.c.event_id)))
    assert inbox == {batch[0]["id"], batch[2]["id"]}
    [retry] = outbox_rows(runtime)
    assert retry["event_id"] == batch[1]["id"] and retry["headers"][ATTEMPT_HEADER] == 2


def test_unfit_messages_in_a_batch_are_dead_lettered_and_the_fitting_ones_handled(runtime, events):
    first, second = events(2)

    outcomes = processor(runtime).process_batch([({"hello": "world"}, None), (first, {}), (second, {})])

    assert outcomes == ["dead", "handled", "handled"]
    [dead] = outbox_rows(runtime)
    assert dead["exchange"] == "labinov.dead" and dead["payload"] == {"hello": "world"}
    assert len(deliveries_to(runtime)) == 2


def test_a_batch_whose_database_is_away_records_nothing_and_asks_for_every_message_again(runtime, events):
    batch = events(2)

    def broken_unit_of_work():
        raise OSError("database unavailable")

    consumer = EventProcessor("notification", HANDLERS, broken_unit_of_work, runtime.inbox, max_attempts=5)

    assert consumer.process_batch([(body, {}) for body in batch]) == [None, None]
    assert deliveries_to(runtime) == []
