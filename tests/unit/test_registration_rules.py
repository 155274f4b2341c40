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


# --- seats with a quota and without a waiting list -----------------------------------------------------


def test_a_registrant_whose_agency_holds_its_quota_is_waitlisted_though_seats_are_free():
    request = SeatRequest(capacity=30, confirmed=3, opd_quota=3, opd_confirmed=3)
    assert decide_seat(request) is SeatOutcome.WAITLISTED


def test_a_registrant_whose_agency_has_room_under_its_quota_is_confirmed():
    assert decide_seat(SeatRequest(capacity=30, confirmed=3, opd_quota=3, opd_confirmed=2)) is SeatOutcome.CONFIRMED


def test_a_full_session_without_a_waiting_list_refuses():
    assert decide_seat(SeatRequest(capacity=30, confirmed=30, waitlist=False)) is SeatOutcome.REFUSED


def test_an_agency_at_its_quota_in_a_session_without_a_waiting_list_is_refused():
    request = SeatRequest(capacity=30, confirmed=1, opd_quota=1, opd_confirmed=1, waitlist=False)
    assert decide_seat(request) is SeatOutcome.REFUSED


def test_a_session_without_a_waiting_list_still_confirms_while_seats_are_free():
    assert decide_seat(SeatRequest(capacity=2, confirmed=1, waitlist=False)) is SeatOutcome.CONFIRMED


# --- whether a session takes registrations -------------------------------------------------------------

STARTS = NOW + timedelta(days=7)


@pytest.mark.parametrize(
    ("window", "reason"),
    [
        (rules.SessionWindow("draft", STARTS), "not published"),
        (rules.SessionWindow("cancelled", STARTS), "cancelled"),
        (rules.SessionWindow("published", STARTS, opens_at=NOW + timedelta(hours=1)), "opens at"),
        (rules.SessionWindow("published", STARTS, closes_at=NOW), "closed at"),
        (rules.SessionWindow("published", NOW - timedelta(minutes=1)), "already started"),
    ],
    ids=["draft", "cancelled", "before-the-window", "after-the-window", "started"],
)
def test_a_session_refuses_registrations_with_the_reason(window, reason):
    assert reason in rules.registration_refusal(window, NOW)


def test_a_published_session_takes_registrations_inside_its_window():
    window = rules.SessionWindow("published", STARTS, opens_at=NOW - timedelta(days=1), closes_at=NOW + timedelta(1))
    assert rules.registration_refusal(window, NOW) is None


def test_without_a_closing_time_the_window_closes_at_the_start():
    assert rules.registration_refusal(rules.SessionWindow("published", NOW + timedelta(seconds=1)), NOW) is None
    assert rules.registration_refusal(rules.SessionWindow("published", NOW), NOW) is not None


def test_an_organiser_may_keep_registration_open_after_the_start():
    window = rules.SessionWindow("published", NOW - timedelta(hours=1), closes_at=NOW + timedelta(hours=1))
    assert rules.registration_refusal(window, NOW) is None


def test_the_agency_must_be_one_of_the_programme_s_when_the_session_has_a_programme():
    assert rules.opd_problem("Dinas Kesehatan", ["Dinas Kesehatan", "Bappeda"]) is None
    assert "Bappeda" in rules.opd_problem("Dinas Pariwisata", ["Dinas Kesehatan", "Bappeda"])
    assert rules.opd_problem("Any agency at all", None) is None


def test_only_time_and_place_changes_are_notable_with_old_and_new_values():
    before = {"starts_at": STARTS, "ends_at": STARTS + timedelta(hours=3), "location": "Tarakan", "online_url": None}
    changes = {"location": "Tanjung Selor", "ends_at": before["ends_at"], "title": "New title"}
    assert rules.notable_changes(before, changes) == {"location": {"old": "Tarakan", "new": "Tanjung Selor"}}


# --- promotion -----------------------------------------------------------------------------------------


def waiting(*people: tuple[str, str, int]) -> list[rules.Waiting]:
    return [rules.Waiting(registration_id, opd, sequence) for registration_id, opd, sequence in people]


def test_the_first_waiting_registrant_is_promoted():
    queue = waiting(("b", "Bappeda", 7), ("a", "Dinkes", 3))
    assert rules.choose_promotion(queue, {}, None).registration_id == "a"


def test_a_waiting_registrant_whose_agency_is_at_its_quota_is_skipped_for_the_next_who_fits():
    queue = waiting(("a", "Dinkes", 1), ("b", "Dinkes", 2), ("c", "Bappeda", 3))
    assert rules.choose_promotion(queue, {"Dinkes": 2, "Bappeda": 1}, opd_quota=2).registration_id == "c"


def test_nobody_is_promoted_when_every_waiting_agency_is_at_its_quota():
    assert rules.choose_promotion(waiting(("a", "Dinkes", 1)), {"Dinkes": 2}, opd_quota=2) is None
    assert rules.choose_promotion([], {}, None) is None


def test_free_seats_are_filled_only_before_the_start_of_a_session_not_cancelled():
    assert rules.seats_to_fill(10, 7, "published", STARTS, NOW) == 3
    assert rules.seats_to_fill(10, 12, "published", STARTS, NOW) == 0
    assert rules.seats_to_fill(10, 7, "cancelled", STARTS, NOW) == 0
    assert rules.seats_to_fill(10, 7, "published", NOW, NOW) == 0


# --- participants' links -------------------------------------------------------------------------------

READ, CANCEL = rules.RegistrationAction.READ, rules.RegistrationAction.CANCEL


@pytest.mark.parametrize(
    ("role", "subject", "status", "action", "access"),
    [
        ("organiser", "account-1", "confirmed", CANCEL, rules.Access.FULL),
        ("organiser", "account-1", "cancelled", READ, rules.Access.FULL),
        ("participant", "reg-1", "confirmed", READ, rules.Access.FULL),
        ("participant", "reg-1", "waitlisted", CANCEL, rules.Access.FULL),
        ("participant", "reg-1", "cancelled", READ, rules.Access.STATUS_ONLY),
        ("participant", "reg-1", "cancelled", CANCEL, rules.Access.FORBIDDEN),
        ("participant", "reg-2", "confirmed", READ, rules.Access.FORBIDDEN),
        ("participant", "reg-2", None, CANCEL, rules.Access.FORBIDDEN),
        ("evaluator", "account-2", "confirmed", READ, rules.Access.FORBIDDEN),
    ],
    ids=[
        "organiser-cancels-any",
        "organiser-reads-cancelled-in-full",
        "participant-reads-own",
        "participant-cancels-own",
        "participant-reads-own-cancelled-status",
        "participant-cannot-cancel-twice",
        "participant-reads-another",
        "participant-cancels-another-before-lookup",
        "evaluator",
    ],
)
def test_who_may_do_what_with_a_registration(role, subject, status, action, access):
    granted, reason = rules.registration_access(role, subject, "reg-1", status, action)
    assert granted is access
    assert (reason is None) == (access is not rules.Access.FORBIDDEN)


def test_a_participant_link_lives_until_30_days_after_the_session():
    assert rules.participant_token_lifetime(NOW + timedelta(days=10), NOW) == timedelta(days=40).total_seconds()


def test_a_participant_link_lives_at_least_a_day_and_at_most_400_days():
    assert rules.participant_token_lifetime(NOW - timedelta(days=90), NOW) == 24 * 3600
    assert rules.participant_token_lifetime(NOW + timedelta(days=3000), NOW) == 400 * 24 * 3600


def test_every_verifier_accepts_the_longest_participant_link_and_nothing_longer():
    from shared.tokens import DEFAULT_MAX_LIFETIME_BY_ROLE

    assert DEFAULT_MAX_LIFETIME_BY_ROLE["participant"] == rules.PARTICIPANT_LINK_LONGEST.total_seconds()


def test_a_programme_is_named_with_its_year_once():
    assert rules.programme_label("Laboratorium Inovasi Kaltara 2027", 2027) == "Laboratorium Inovasi Kaltara 2027"
    assert rules.programme_label("Laboratorium Inovasi Kaltara", 2027) == "Laboratorium Inovasi Kaltara 2027"
