"""What follows a failed send (services.notification.rules), every branch, without any server.

The second half checks the shell's half of the policy: how services.notification.mail turns what smtplib
raised into the failure kind the rules decide on.
"""

from __future__ import annotations

import smtplib
from datetime import UTC, datetime, timedelta

import pytest

from services.notification.mail import classify_send_failure
from services.notification.rules import (
    MAX_DELIVERY_AGE,
    MAX_SEND_ATTEMPTS,
    Fail,
    FailReason,
    RetryAt,
    SendFailure,
    WaitForServer,
    after_failed_send,
)

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
JUST_QUEUED = NOW - timedelta(seconds=1)
CHARGED = [SendFailure.MAIL_REFUSED, SendFailure.BROKEN_IN_FLIGHT]


def decide(failure: SendFailure, attempts: int = 0, created_at: datetime = JUST_QUEUED, now: datetime = NOW):
    return after_failed_send(failure, attempts=attempts, created_at=created_at, now=now)


# --- the mail's own fault: it pays an attempt -----------------------------------------------------------


@pytest.mark.parametrize("failure", CHARGED)
def test_a_first_refusal_costs_one_attempt_and_retries_in_15_seconds(failure):
    assert decide(failure) == RetryAt(NOW + timedelta(seconds=15), attempts=1)


@pytest.mark.parametrize("failure", CHARGED)
def test_each_further_refusal_waits_three_times_longer(failure):
    assert decide(failure, attempts=1) == RetryAt(NOW + timedelta(seconds=45), attempts=2)
    assert decide(failure, attempts=4) == RetryAt(NOW + timedelta(seconds=1215), attempts=5)


@pytest.mark.parametrize("failure", CHARGED)
def test_the_last_allowed_attempt_that_fails_fails_the_delivery(failure):
    assert decide(failure, attempts=MAX_SEND_ATTEMPTS - 1) == Fail(FailReason.TOO_MANY_ATTEMPTS, MAX_SEND_ATTEMPTS)


@pytest.mark.parametrize("failure", CHARGED)
def test_a_refused_mail_older_than_the_maximum_age_fails_at_once_and_still_counts_the_attempt(failure):
    too_old = NOW - MAX_DELIVERY_AGE - timedelta(seconds=1)
    assert decide(failure, attempts=2, created_at=too_old) == Fail(FailReason.TOO_OLD, 3)


def test_a_mail_exactly_as_old_as_the_maximum_age_is_still_retried():
    decision = decide(SendFailure.MAIL_REFUSED, created_at=NOW - MAX_DELIVERY_AGE)
    assert isinstance(decision, RetryAt)


# --- the server is away: no attempt charged -------------------------------------------------------------


def test_a_mail_server_that_is_away_costs_a_fresh_delivery_no_attempt_and_a_30_second_wait():
    assert decide(SendFailure.SERVER_UNAVAILABLE, attempts=2) == WaitForServer(NOW + timedelta(seconds=30))


def test_during_an_outage_a_delivery_waits_as_long_again_as_it_has_waited():
    created = NOW - timedelta(minutes=4)
    assert decide(SendFailure.SERVER_UNAVAILABLE, created_at=created) == WaitForServer(NOW + timedelta(minutes=4))


def test_during_a_long_outage_a_delivery_waits_at_most_ten_minutes_at_a_time():
    created = NOW - timedelta(hours=20)
    assert decide(SendFailure.SERVER_UNAVAILABLE, created_at=created) == WaitForServer(NOW + timedelta(minutes=10))


def test_an_outage_never_fails_a_delivery_by_its_count_of_attempts():
    decision = decide(SendFailure.SERVER_UNAVAILABLE, attempts=MAX_SEND_ATTEMPTS + 3)
    assert decision == WaitForServer(NOW + timedelta(seconds=30))


def test_a_delivery_older_than_the_maximum_age_fails_when_the_server_is_still_away_without_an_attempt_charged():
    too_old = NOW - MAX_DELIVERY_AGE - timedelta(minutes=1)
    assert decide(SendFailure.SERVER_UNAVAILABLE, attempts=2, created_at=too_old) == Fail(FailReason.TOO_OLD, 2)


# --- what a failure means for the rest of the batch -----------------------------------------------------


def test_only_a_refusal_lets_the_rest_of_the_batch_go_on_over_the_same_connection():
    assert not SendFailure.MAIL_REFUSED.connection_lost
    assert SendFailure.SERVER_UNAVAILABLE.connection_lost
    assert SendFailure.BROKEN_IN_FLIGHT.connection_lost


def test_a_connection_broken_in_flight_charges_that_mail_but_the_mails_behind_it_wait_for_free():
    """The sender decides the mails behind a lost connection as SERVER_UNAVAILABLE."""
    in_flight = decide(SendFailure.BROKEN_IN_FLIGHT, attempts=0)
    behind = decide(SendFailure.SERVER_UNAVAILABLE, attempts=0)
    assert (in_flight.attempts, behind) == (1, WaitForServer(NOW + timedelta(seconds=30)))


def test_the_rules_work_on_naive_utc_times_as_well():
    naive_now = NOW.replace(tzinfo=None)
    decision = after_failed_send(
        SendFailure.MAIL_REFUSED, attempts=0, created_at=naive_now - timedelta(minutes=1), now=naive_now
    )
    assert decision == RetryAt(naive_now + timedelta(seconds=15), attempts=1)


# --- the shell: what smtplib raised, as a failure kind --------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (smtplib.SMTPRecipientsRefused({"a@b.id": (450, b"Mailbox busy")}), SendFailure.MAIL_REFUSED),
        (smtplib.SMTPRecipientsRefused({"a@b.id": (550, b"No such user")}), SendFailure.PERMANENTLY_REFUSED),
        (smtplib.SMTPSenderRefused(553, b"Sender refused", "panitia@labinov.id"), SendFailure.MAIL_REFUSED),
        (smtplib.SMTPDataError(554, b"Message rejected"), SendFailure.MAIL_REFUSED),
        (smtplib.SMTPNotSupportedError("SMTPUTF8 not supported"), SendFailure.MAIL_REFUSED),
        (ValueError("Header values may not contain linefeed"), SendFailure.MAIL_REFUSED),
        (smtplib.SMTPDataError(421, b"Service shutting down"), SendFailure.SERVER_UNAVAILABLE),
        (smtplib.SMTPSenderRefused(421, b"Closing channel", "panitia@labinov.id"), SendFailure.SERVER_UNAVAILABLE),
        (smtplib.SMTPRecipientsRefused({"a@b.id": (421, b"Closing channel")}), SendFailure.SERVER_UNAVAILABLE),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), SendFailure.BROKEN_IN_FLIGHT),
        (ConnectionResetError(104, "Connection reset by peer"), SendFailure.BROKEN_IN_FLIGHT),
        (TimeoutError("timed out"), SendFailure.BROKEN_IN_FLIGHT),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else value.name,
)
def test_what_smtplib_raised_is_classified_for_the_rules(exc, failure):
    assert classify_send_failure(exc) is failure


def test_a_recipient_refused_for_good_fails_at_once_without_a_retry():
    assert decide(SendFailure.PERMANENTLY_REFUSED) == Fail(FailReason.REFUSED, 1)
    assert decide(SendFailure.PERMANENTLY_REFUSED, attempts=2) == Fail(FailReason.REFUSED, 3)


def test_a_retry_asked_to_spread_waits_between_half_and_all_of_the_backoff():
    from random import Random

    from shared.backoff import equal_jitter

    waits = {
        after_failed_send(
            SendFailure.MAIL_REFUSED, attempts=0, created_at=JUST_QUEUED, now=NOW, jitter=equal_jitter, source=Random(i)
        ).at
        - NOW
        for i in range(20)
    }
    assert len(waits) > 1
    assert all(timedelta(seconds=7.5) <= wait <= timedelta(seconds=15) for wait in waits)
