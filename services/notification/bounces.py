"""Mail that bounced after the mail server had accepted it: the mail provider's bounce report.

An SMTP server's ``250`` only says it took the mail (the delivery is ``sent``); the recipient's server may still
refuse it later, and a mail provider tells us by calling ``POST /notification/api/v1/mail/bounces`` with the
shared secret in ``X-Bounce-Secret`` (``LABINOV_MAIL_BOUNCE_SECRET``) and the bounced mail's ``Message-ID`` —
which names the delivery, the same on every send of it (:func:`services.notification.messages.message_id`).
Providers report hard bounces this way (a soft bounce is their own retry, not an outcome).

:func:`record_bounce` makes the delivery ``bounced`` with its error, keeps the report as an attempt and tells it
as ``notification.failed``, in the caller's transaction. It is a compare-and-set on the state read — ``UPDATE …
WHERE status = <the state read>``, the row read ``FOR UPDATE`` on PostgreSQL — (:func:`.attempts.apply_report`), so of two
reports racing (a provider retrying its call) one changes the row and the other nothing, and a report about a delivery still
``sending`` (the provider was quicker than the sender's commit) is the outcome: the sender's own record then
finds the row no longer pending (the work queue's guard) and writes nothing, so the delivery is never told as
both. A report about a delivery that is not ``sent`` or ``sending`` (queued, failed, cancelled, held, already
bounced) changes nothing.
"""

from __future__ import annotations

from services.notification.attempts import apply_report, correlation_of, record_attempt
from services.notification.messages import MESSAGE_ID_DOMAIN
from services.notification.sending import outcome_event_data
from services.notification.tables import Delivery
from shared.db import UnitOfWork
from shared.errors import NotFound

#: The states a bounce report changes: the mail went (or is being recorded as gone).
BOUNCEABLE = ("sent", "sending")


def delivery_id_of(message_id: str) -> str | None:
    """The delivery named by one of our ``Message-ID`` values (``<id@labinov.local>``, angle brackets
    optional), else ``None``: a Message-ID of someone else's mail names nothing here."""
    local, at, domain = message_id.strip().removeprefix("<").removesuffix(">").rpartition("@")
    return local if at and local and domain == MESSAGE_ID_DOMAIN else None


def record_bounce(uow: UnitOfWork, message_id: str, error: str) -> Delivery:
    """The mail ``message_id`` bounced with ``error``: see the module docstring (the compare-and-set is
    :func:`services.notification.attempts.apply_report`)."""
    delivery_id = delivery_id_of(message_id)
    row = uow.session.get(Delivery, delivery_id, with_for_update=True) if delivery_id else None
    if row is None:
        raise NotFound(f"No mail of ours has the Message-ID {message_id}.")
    values = {"status": "bounced", "last_error": error[:2000], "claimed_until": None}
    if apply_report(uow, row, BOUNCEABLE, values):
        record_attempt(uow, row.id, "bounced", values["last_error"])
        with correlation_of(row.correlation_id):
            uow.publish("notification.failed", outcome_event_data(row, values["last_error"]), subject=row.id)
    return row
