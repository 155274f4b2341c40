"""The event catalogue: what a producer may publish and what a consumer accepts (shared/events.py)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.events import CATALOGUE, InvalidEvent, make_event, parse_event


def confirmed(data: dict) -> dict:
    return make_event("registration.confirmed", data, source="/registration", correlation_id="req-42", subject="r-1")


def over_the_wire(envelope: dict) -> dict:
    return json.loads(json.dumps(envelope))


def test_make_event_builds_a_cloudevents_1_0_envelope(registration_data):
    before = datetime.now(UTC)
    envelope = confirmed(registration_data())

    assert envelope["specversion"] == "1.0"
    assert uuid.UUID(envelope["id"]).version == 4
    assert envelope["source"] == "/registration"
    assert envelope["type"] == "registration.confirmed"
    assert envelope["subject"] == "r-1"
    assert envelope["datacontenttype"] == "application/json"
    assert envelope["dataversion"] == CATALOGUE["registration.confirmed"].version
    assert envelope["correlationid"] == "req-42"
    sent_at = datetime.fromisoformat(envelope["time"])
    assert sent_at.tzinfo is not None and before - timedelta(seconds=1) <= sent_at <= datetime.now(UTC)
    assert envelope["data"]["nip"] == "198503152010012001"
    assert envelope["data"]["session_starts_at"] == "2026-12-07T01:00:00+00:00"


def test_every_event_gets_its_own_id(registration_data):
    assert confirmed(registration_data())["id"] != confirmed(registration_data())["id"]


def test_the_envelope_is_plain_json(registration_data):
    envelope = confirmed(registration_data())
    assert over_the_wire(envelope) == envelope


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "not-an-address"),
        ("nip", "12345"),
        ("status", "maybe"),
        ("session_starts_at", datetime(2026, 12, 7, 9, 0)),  # naive: no one can tell which 09:00
    ],
)
def test_make_event_refuses_data_that_does_not_fit_and_names_the_field(registration_data, field, value):
    with pytest.raises(InvalidEvent, match=field):
        confirmed(registration_data(**{field: value}))


def test_make_event_names_a_missing_required_field(registration_data):
    data = registration_data()
    del data["email"]
    with pytest.raises(InvalidEvent, match="email"):
        confirmed(data)


def test_make_event_refuses_a_type_missing_from_the_catalogue(registration_data):
    with pytest.raises(InvalidEvent, match="registration.teleported"):
        make_event("registration.teleported", registration_data(), source="/registration", correlation_id="c")


def test_round_trip_through_json_gives_aware_datetimes(registration_data):
    envelope = confirmed(registration_data())
    event = parse_event(over_the_wire(envelope))

    assert event.id == envelope["id"]
    assert event.type == "registration.confirmed"
    assert event.correlationid == "req-42"
    assert event.time.tzinfo is not None
    assert event.data["session_starts_at"] == datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
    assert event.data["session_starts_at"].utcoffset() == timedelta(0)


def test_parse_event_refuses_a_type_missing_from_the_catalogue(registration_data):
    body = {**over_the_wire(confirmed(registration_data())), "type": "registration.teleported"}
    with pytest.raises(InvalidEvent, match="type"):
        parse_event(body)


def test_parse_event_refuses_a_dataversion_it_does_not_know(registration_data):
    body = {**over_the_wire(confirmed(registration_data())), "dataversion": "2"}
    with pytest.raises(InvalidEvent, match="dataversion"):
        parse_event(body)


@pytest.mark.parametrize(
    "attribute", ["specversion", "id", "source", "type", "time", "dataversion", "correlationid", "data"]
)
def test_parse_event_refuses_an_envelope_missing_an_attribute(registration_data, attribute):
    body = over_the_wire(confirmed(registration_data()))
    del body[attribute]
    with pytest.raises(InvalidEvent, match=attribute):
        parse_event(body)


def test_parse_event_refuses_data_that_no_longer_fits(registration_data):
    body = over_the_wire(confirmed(registration_data()))
    body["data"]["email"] = "nobody"
    with pytest.raises(InvalidEvent, match="email"):
        parse_event(body)


@pytest.mark.parametrize("body", [None, "a string", ["a", "list"], 42, b"{}"])
def test_parse_event_refuses_a_body_that_is_not_a_json_object(body):
    with pytest.raises(InvalidEvent, match="JSON object"):
        parse_event(body)


def test_parse_event_refuses_times_without_an_offset(registration_data):
    body = over_the_wire(confirmed(registration_data()))
    body["time"] = "2026-12-07T09:00:00"
    with pytest.raises(InvalidEvent, match="time"):
        parse_event(body)
    body = over_the_wire(confirmed(registration_data()))
    body["data"]["session_starts_at"] = "2026-12-07T09:00:00"
    with pytest.raises(InvalidEvent, match="session_starts_at"):
        parse_event(body)
