"""The one backoff rule (shared.backoff) and the named policies every retry in the suite uses."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from services.notification.rules import SEND_RETRY, SERVER_WAIT
from shared.backoff import Backoff, backoff, equal_jitter, full_jitter, no_jitter
from shared.messaging.consumer import CONSUMER_RECONNECT, HANDLER_RETRY, after_handler_failure, retry_delay
from shared.messaging.outbox import PUBLISH_RETRY, RELAY_RECONNECT

SECOND = timedelta(seconds=1)


def seconds(*values: float) -> list[timedelta]:
    return [timedelta(seconds=v) for v in values]


def test_each_failure_multiplies_the_wait_by_the_factor_up_to_the_cap():
    waits = [backoff(n, base=SECOND, factor=2, cap=10 * SECOND) for n in range(1, 7)]
    assert waits == seconds(1, 2, 4, 8, 10, 10)


def test_an_attempt_below_one_counts_as_the_first():
    assert backoff(0, base=SECOND, factor=3, cap=60 * SECOND) == SECOND
    assert backoff(-5, base=SECOND, factor=3, cap=60 * SECOND) == SECOND


def test_a_huge_attempt_number_waits_the_cap_instead_of_overflowing():
    assert backoff(10**9, base=SECOND, factor=4, cap=600 * SECOND) == 600 * SECOND


def test_a_handler_retry_waits_1_4_16_seconds_and_at_most_ten_minutes():
    assert [retry_delay(attempt) for attempt in range(2, 9)] == seconds(1, 4, 16, 64, 256, 600, 600)
    assert HANDLER_RETRY.jitter is no_jitter


def test_a_failed_handler_is_retried_until_its_last_attempt_then_dead_lettered():
    assert after_handler_failure(1, max_attempts=3) == retry_delay(2) == SECOND
    assert after_handler_failure(2, max_attempts=3) == retry_delay(3)
    assert after_handler_failure(3, max_attempts=3) is None
    assert after_handler_failure(7, max_attempts=3) is None


def test_a_row_the_broker_refused_waits_1_2_4_seconds_up_to_a_minute():
    assert [PUBLISH_RETRY.delay(n) for n in range(1, 9)] == seconds(1, 2, 4, 8, 16, 32, 60, 60)


def test_a_refused_mail_waits_15_seconds_then_three_times_longer_each_time_up_to_an_hour():
    assert [SEND_RETRY.delay(attempts) for attempts in range(1, 8)] == [
        timedelta(seconds=min(5 * 3**attempts, 3600)) for attempts in range(1, 8)
    ]


def test_while_the_mail_server_is_away_a_delivery_waits_as_long_again_as_it_has_waited_within_30s_and_10min():
    assert SERVER_WAIT.after_waiting(timedelta(0)) == timedelta(seconds=30)
    assert SERVER_WAIT.after_waiting(timedelta(seconds=29)) == timedelta(seconds=30)
    assert SERVER_WAIT.after_waiting(timedelta(minutes=3)) == timedelta(minutes=3)
    assert SERVER_WAIT.after_waiting(timedelta(hours=5)) == timedelta(minutes=10)


def test_waiting_after_so_long_grows_the_total_wait_by_the_factor():
    thrice = Backoff(base=SECOND, factor=3, cap=timedelta(hours=1))
    assert thrice.after_waiting(10 * SECOND) == 20 * SECOND  # 10 s waited + 20 s = 30 s: three times as long


def test_without_jitter_the_broker_reconnects_would_be_the_old_numbers():
    relay, consumer = (Backoff(p.base, p.factor, p.cap) for p in (RELAY_RECONNECT, CONSUMER_RECONNECT))
    assert [relay.delay(n) for n in range(1, 7)] == seconds(0.5, 1, 2, 4, 5, 5)
    assert [consumer.delay(n) for n in range(1, 6)] == seconds(1, 2, 4, 5, 5)


@pytest.mark.parametrize("policy", [RELAY_RECONNECT, CONSUMER_RECONNECT], ids=["relay", "consumer"])
def test_broker_reconnects_are_jittered_between_half_and_all_of_the_wait(policy):
    plain = Backoff(policy.base, policy.factor, policy.cap)
    source = random.Random(7)
    for attempt in range(1, 12):
        for _ in range(50):
            wait = policy.delay(attempt, source)
            assert plain.delay(attempt) / 2 <= wait <= plain.delay(attempt)


def test_workers_reconnecting_at_the_same_moment_spread_out():
    waits = {RELAY_RECONNECT.seconds(5, random.Random(worker)) for worker in range(20)}
    assert len(waits) == 20
    assert max(waits) - min(waits) > 1  # over seconds, not all at once


def test_a_seeded_random_source_makes_jittered_waits_reproducible():
    first = [RELAY_RECONNECT.delay(n, random.Random(42)) for n in range(1, 6)]
    again = [RELAY_RECONNECT.delay(n, random.Random(42)) for n in range(1, 6)]
    assert first == again


def test_full_jitter_waits_anywhere_between_nothing_and_the_delay():
    source = random.Random(3)
    waits = [full_jitter(10 * SECOND, source) for _ in range(200)]
    assert all(timedelta(0) <= wait <= 10 * SECOND for wait in waits)
    assert min(waits) < 2 * SECOND and max(waits) > 8 * SECOND


def test_equal_jitter_never_waits_less_than_half():
    source = random.Random(5)
    waits = [equal_jitter(10 * SECOND, source) for _ in range(200)]
    assert all(5 * SECOND <= wait <= 10 * SECOND for wait in waits)


def test_retries_of_one_row_or_message_are_not_jittered():
    assert {PUBLISH_RETRY.jitter, HANDLER_RETRY.jitter, SEND_RETRY.jitter, SERVER_WAIT.jitter} == {no_jitter}
