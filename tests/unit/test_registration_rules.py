"""Registration's pure decisions (services/registration/rules.py): seats, the sign-in throttle, account roles.

No database, no app: plain values in, plain values out.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.registration import rules
from services.registration.rules import (
    SIGN_IN_ATTEMPTS,
    SIGN_IN_ATTEMPTS_PER_CLIENT,
    SIGN_IN_WINDOW,
    AttemptWindow,
    SeatOutcome,
    SeatRequest,
    ThrottleScope,
    client_key,
    decide_seat,
    sign_in_verdict,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2027, 3, 1, 1, 0, tzinfo=UTC)

# --- seats ---------------------------------------------------------------------------------------------


def test_a_registrant_is_confirmed_while_seats_are_free():
    assert decide_seat(SeatRequest(capacity=30, confirmed=0)) is SeatOutcome.CONFIRMED


def test_the_last_seat_is_confirmed():
    assert decide_seat(SeatRequest(capacity=30, confirmed=29)) is SeatOutcome.CONFIRMED


def test_a_registrant_is_waitlisted_when_the_session_is_full():
    assert decide_seat(SeatRequest(capacity=30, confirmed=30)) is SeatOutcome.WAITLISTED


def test_a_registrant_is_waitlisted_when_the_capacity_was_lowered_below_the_confirmed():
    assert decide_seat(SeatRequest(capacity=10, confirmed=12)) is SeatOutcome.WAITLISTED


def test_the_outcome_is_the_registration_status_and_names_its_event():
    assert f"registration.{SeatOutcome.WAITLISTED}" == "registration.waitlisted"
    assert SeatOutcome.CONFIRMED.value == "confirmed"


def test_seats_left_never_go_below_zero():
    assert rules.SeatCount(capacity=5, confirmed=7).available == 0
    assert rules.SeatCount(capacity=5, confirmed=2).available == 3


# --- the sign-in throttle ------------------------------------------------------------------------------


def counters(for_account: int, from_client: int, started: datetime = NOW - timedelta(minutes=5)):
    return {
        ThrottleScope.ACCOUNT_FROM_CLIENT: AttemptWindow(for_account, started),
        ThrottleScope.CLIENT: AttemptWindow(from_client, started),
    }


def test_an_attempt_within_both_limits_is_allowed():
    assert sign_in_verdict(counters(1, 1), NOW).allowed


def test_the_last_allowed_attempt_of_each_counter_is_still_allowed():
    assert sign_in_verdict(counters(SIGN_IN_ATTEMPTS, SIGN_IN_ATTEMPTS_PER_CLIENT), NOW).allowed


def test_one_attempt_too_many_for_the_account_from_this_client_waits_until_the_window_ends():
    verdict = sign_in_verdict(counters(SIGN_IN_ATTEMPTS + 1, SIGN_IN_ATTEMPTS + 1), NOW)
    assert not verdict.allowed
    assert verdict.refused_by is ThrottleScope.ACCOUNT_FROM_CLIENT
    assert verdict.retry_after_seconds == (SIGN_IN_WINDOW - timedelta(minutes=5)).total_seconds()


def test_one_attempt_too_many_from_this_client_is_refused_whatever_the_address():
    verdict = sign_in_verdict(counters(1, SIGN_IN_ATTEMPTS_PER_CLIENT + 1), NOW)
    assert not verdict.allowed
    assert verdict.refused_by is ThrottleScope.CLIENT


def test_when_both_counters_are_full_the_attempt_waits_for_the_later_window():
    verdict = sign_in_verdict(
        {
            ThrottleScope.ACCOUNT_FROM_CLIENT: AttemptWindow(SIGN_IN_ATTEMPTS + 1, NOW - timedelta(minutes=1)),
            ThrottleScope.CLIENT: AttemptWindow(SIGN_IN_ATTEMPTS_PER_CLIENT + 1, NOW - timedelta(minutes=14)),
        },
        NOW,
    )
    assert verdict.refused_by is ThrottleScope.ACCOUNT_FROM_CLIENT
    assert verdict.retry_after_seconds == 14 * 60


def test_a_window_that_has_ended_refuses_nothing():
    assert sign_in_verdict(counters(99, 99, started=NOW - SIGN_IN_WINDOW), NOW).allowed


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one():
    almost_over = NOW - SIGN_IN_WINDOW + timedelta(milliseconds=300)
    assert sign_in_verdict(counters(SIGN_IN_ATTEMPTS + 1, 1, started=almost_over), NOW).retry_after_seconds == 1
    a_bit_in = NOW - timedelta(seconds=10, milliseconds=500)
    verdict = sign_in_verdict(counters(SIGN_IN_ATTEMPTS + 1, 1, started=a_bit_in), NOW)
    assert verdict.retry_after_seconds == SIGN_IN_WINDOW.total_seconds() - 10


def test_no_limit_counts_an_account_across_every_client_so_no_stranger_can_lock_its_owner_out():
    assert set(rules.SIGN_IN_LIMITS) == {ThrottleScope.ACCOUNT_FROM_CLIENT, ThrottleScope.CLIENT}


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:0db8:0001:0002:0000:0000:0000:0001", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        (None, "unknown"),
        ("", "unknown"),
    ],
)
def test_a_client_is_counted_by_its_address_written_one_way(address, key):
    assert client_key(address) == key


def test_one_ipv6_subscriber_cannot_take_a_fresh_address_per_guess():
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")


def test_an_unparsable_client_address_is_counted_as_bounded_text():
    assert client_key("x" * 500) == "x" * 64


# --- accounts and the module's own rule ----------------------------------------------------------------


def test_accounts_are_organisers_or_evaluators():
    assert rules.ACCOUNT_ROLES == ("organiser", "evaluator")


def test_the_rules_load_no_database_web_mail_or_broker_library_not_even_indirectly():
    probe = (
        "import sys, services.registration.rules; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'flask', 'smtplib', 'kombu'}))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == "[]"
