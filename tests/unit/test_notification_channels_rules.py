"""The pure decisions of the other channels (services/notification/rules.py): what a gateway's answer means,
the token bucket, Standard Webhooks signatures, when an endpoint is switched off, and which addresses a
webhook may reach."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook as StandardWebhook

from services.notification import rules
from services.notification.rules import Fail, FailReason, GatewayFailure, RetryAt
from shared.config import ConfigurationError, load_settings

NOW = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)


# --- the gateway's answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (None, None, GatewayFailure.TEMPORARY),
        (500, None, GatewayFailure.TEMPORARY),
        (502, None, GatewayFailure.TEMPORARY),
        (503, None, GatewayFailure.TEMPORARY),
        (503, timedelta(seconds=3), GatewayFailure.RATE_LIMITED),
        (408, None, GatewayFailure.TEMPORARY),
        (429, None, GatewayFailure.RATE_LIMITED),
        (429, timedelta(seconds=3), GatewayFailure.RATE_LIMITED),
        (400, None, GatewayFailure.PERMANENT),
        (401, None, GatewayFailure.PERMANENT),
        (404, None, GatewayFailure.PERMANENT),
        (422, None, GatewayFailure.PERMANENT),
    ],
)
def test_a_gateway_answer_is_temporary_rate_limited_or_permanent(status, retry_after, expected):
    assert rules.gateway_failure_of(status, retry_after) is expected


def test_a_permanent_refusal_fails_at_once_and_is_never_retried():
    decision = rules.after_gateway_failure(GatewayFailure.PERMANENT, attempts=0, created_at=NOW, now=NOW)
    assert decision == Fail(FailReason.REFUSED, 1)


def test_a_gateway_asking_to_slow_down_is_obeyed_without_charging_an_attempt():
    decision = rules.after_gateway_failure(
        GatewayFailure.RATE_LIMITED,
        attempts=2,
        created_at=NOW,
        now=NOW,
        retry_after=timedelta(seconds=10),
        source=random.Random(1),
    )
    assert isinstance(decision, RetryAt) and decision.attempts == 2
    assert NOW + timedelta(seconds=10) <= decision.at <= NOW + timedelta(seconds=12)


def test_a_temporary_failure_costs_an_attempt_and_backs_off_until_the_last_attempt():
    first = rules.after_gateway_failure(GatewayFailure.TEMPORARY, attempts=0, created_at=NOW, now=NOW)
    second = rules.after_gateway_failure(GatewayFailure.TEMPORARY, attempts=1, created_at=NOW, now=NOW)
    assert first == RetryAt(NOW + timedelta(seconds=5), 1)
    assert second == RetryAt(NOW + timedelta(seconds=15), 2)
    last = rules.after_gateway_failure(
        GatewayFailure.TEMPORARY, attempts=rules.MAX_GATEWAY_ATTEMPTS - 1, created_at=NOW, now=NOW
    )
    assert last == Fail(FailReason.TOO_MANY_ATTEMPTS, rules.MAX_GATEWAY_ATTEMPTS)


def test_temporary_retries_are_spread_by_jitter_within_the_backoff():
    from shared.backoff import equal_jitter

    times = {
        rules.after_gateway_failure(
            GatewayFailure.TEMPORARY, attempts=3, created_at=NOW, now=NOW, jitter=equal_jitter, source=random.Random(i)
        ).at
        for i in range(20)
    }
    full = rules.GATEWAY_RETRY.delay(4)
    assert len(times) > 10 and all(NOW + full / 2 <= at <= NOW + full for at in times)


def test_a_message_two_days_old_fails_even_when_the_gateway_only_asked_to_wait():
    decision = rules.after_gateway_failure(
        GatewayFailure.RATE_LIMITED, attempts=0, created_at=NOW - timedelta(days=3), now=NOW
    )
    assert decision == Fail(FailReason.TOO_OLD, 0)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", timedelta(seconds=7)),
        (" 0 ", timedelta(0)),
        ("Mon, 07 Dec 2026 01:00:30 GMT", timedelta(seconds=30)),
        ("Mon, 07 Dec 2026 00:59:00 GMT", timedelta(0)),
        ("999999", rules.LONGEST_RETRY_AFTER),
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_a_date_and_bounded(header, expected):
    assert rules.retry_after_of(header, NOW) == expected


def test_the_gateway_payload_uses_the_gateway_s_own_field_names():
    fields = dict(
        load_settings("notification", {"LABINOV_SMS_GATEWAY_FIELDS": "to=msisdn, text=message"}).sms_gateway_fields
    )
    body = rules.gateway_payload(fields, to="+628123", text="Halo", channel="sms", reference="d-1")
    assert body == {"msisdn": "+628123", "message": "Halo", "channel": "sms", "reference": "d-1"}


def test_an_unknown_gateway_field_stops_start_up_naming_the_variable():
    with pytest.raises(ConfigurationError, match="LABINOV_SMS_GATEWAY_FIELDS"):
        load_settings("notification", {"LABINOV_SMS_GATEWAY_FIELDS": "phone=msisdn"})


def test_channel_rates_are_read_per_second_with_the_amount_as_burst():
    settings = load_settings("notification", {"LABINOV_SMS_RATE": "300/minute", "LABINOV_WHATSAPP_RATE": "2/second"})
    assert dict((c, (r, b)) for c, r, b in settings.channel_rates) == {"sms": (5.0, 300), "whatsapp": (2.0, 2)}
    with pytest.raises(ConfigurationError, match="LABINOV_SMS_RATE"):
        load_settings("notification", {"LABINOV_SMS_RATE": "fast"})


def test_the_short_text_keeps_the_link_and_cuts_the_subject():
    link = "https://labinov.example/registration/manage/r-1?token=abc"
    text = rules.short_text("Pendaftaran dikonfirmasi: " + "Sosialisasi " * 40, link)
    assert len(text) <= rules.SHORT_TEXT_LIMIT and text.endswith(link) and "…" in text
    assert rules.short_text("Terdaftar") == "Terdaftar"


# --- the token bucket ----------------------------------------------------------------------------------------


def test_a_full_bucket_gives_its_burst_at_once_and_then_one_token_per_interval():
    tokens, at = 3.0, NOW.replace(tzinfo=None)
    for _ in range(3):
        state = rules.take_token(tokens, at, at, rate=2.0, burst=3)
        assert state.granted
        tokens, at = state.tokens, state.at
    refused = rules.take_token(tokens, at, at, rate=2.0, burst=3)
    assert not refused.granted and refused.wait == timedelta(seconds=0.5)
    later = rules.take_token(refused.tokens, refused.at, at + timedelta(seconds=0.5), rate=2.0, burst=3)
    assert later.granted


def test_a_bucket_never_holds_more_than_its_burst_and_a_clock_behind_refills_nothing():
    start = NOW.replace(tzinfo=None)
    assert rules.take_token(0.0, start, start + timedelta(hours=1), rate=5.0, burst=5).tokens == 4.0
    behind = rules.take_token(0.5, start, start - timedelta(seconds=10), rate=5.0, burst=5)
    assert not behind.granted and behind.at == start


# --- Standard Webhooks ---------------------------------------------------------------------------------------


def test_a_webhook_secret_is_whsec_and_the_base64_of_at_least_24_random_bytes():
    secret = rules.new_webhook_secret(bytes(range(32)))
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    with pytest.raises(ValueError):
        rules.new_webhook_secret(b"short")


def test_the_signature_verifies_with_the_standard_webhooks_library():
    secret = rules.new_webhook_secret(bytes(range(24, 56)))
    body = b'{"type":"registration.confirmed","data":{"name":"Sari Wulandari"}}'
    timestamp = int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": rules.webhook_signature(secret, "msg_1", timestamp, body),
    }
    assert StandardWebhook(secret).verify(body, headers)["data"]["name"] == "Sari Wulandari"
    assert (
        StandardWebhook(secret).sign("msg_1", datetime.fromtimestamp(timestamp, UTC), body.decode())
        == (headers["webhook-signature"])
    )


def test_a_failed_webhook_attempt_retries_with_backoff_until_its_last():
    assert rules.after_webhook_failure(attempts=0, now=NOW) == RetryAt(NOW + timedelta(seconds=5), 1)
    assert rules.after_webhook_failure(attempts=1, now=NOW) == RetryAt(NOW + timedelta(seconds=30), 2)
    last = rules.after_webhook_failure(attempts=rules.MAX_WEBHOOK_ATTEMPTS - 1, now=NOW)
    assert last == Fail(FailReason.TOO_MANY_ATTEMPTS, rules.MAX_WEBHOOK_ATTEMPTS)


def test_an_endpoint_is_switched_off_after_ten_failures_in_a_row_over_a_day_or_at_once_when_gone():
    day_ago = NOW - timedelta(days=1, minutes=1)
    assert rules.webhook_disable_reason(consecutive_failures=10, failing_since=day_ago, now=NOW)
    assert rules.webhook_disable_reason(consecutive_failures=9, failing_since=day_ago, now=NOW) is None
    assert (
        rules.webhook_disable_reason(consecutive_failures=50, failing_since=NOW - timedelta(hours=2), now=NOW) is None
    )
    assert "410" in rules.webhook_disable_reason(consecutive_failures=1, failing_since=NOW, now=NOW, gone=True)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "fc00::1",
        "fe80::1",
        "224.0.0.1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_a_webhook_may_not_reach_loopback_private_link_local_or_reserved_addresses(address):
    assert rules.refused_address(address) is not None
    assert rules.refused_address(address, allow_local=True) is None


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"])
def test_a_webhook_may_reach_an_address_on_the_public_internet(address):
    assert rules.refused_address(address) is None
