"""The notification worker process: `labinov worker notification` — consumer, outbox relay, mail sender.

The mail sender waits on the deliveries channel between claims (:func:`shared.worker.work_loop`): the
transaction that queues a delivery (``domain.queue_messages``: event handlers, the announcement fan-out) rings
it, and the sender wakes once it commits. The announcement loop expands due announcements into deliveries; the
gateway loop sends SMS and WhatsApp messages, the webhook loop signed webhook deliveries.

**Several sender threads.** A sender spends most of a mail waiting — on PostgreSQL (its lease renewal, the
batch's outcomes) and on the SMTP server's replies — with the GIL released. :data:`MAIL_SENDERS` loops compete
on the deliveries queue inside one process exactly as loops of different processes do (claims take disjoint
rows, ``SKIP LOCKED``), each with its own SMTP session and its own wake-up listener, so one sender's wait is
another's turn to send. Every ring wakes them all; those that find nothing go back to waiting.
"""

from __future__ import annotations

import logging
import threading

from services.notification.announcements import fan_out_loop
from services.notification.bootstrap import bootstrap
from services.notification.gateway import gateway_loop
from services.notification.handlers import HANDLERS
from services.notification.mail import transport_for
from services.notification.sending import send_due_mail
from services.notification.webhooks import webhook_loop
from shared.messaging.wakeup import DELIVERIES
from shared.runtime import ServiceRuntime
from shared.worker import run_worker, work_loop

log = logging.getLogger(__name__)

#: Mail sender threads per worker process (measured in ``make bench``, part ``fanout``).
MAIL_SENDERS = 2


def send_mail_loop(runtime: ServiceRuntime, stop: threading.Event, poll_interval: float | None = None) -> None:
    """Send due deliveries until ``stop``, woken when one is queued; an unreachable mail server only delays
    them."""
    transport = transport_for(runtime.settings.smtp_url, runtime.settings.mailbox_dir)
    try:
        work_loop(
            runtime,
            stop,
            DELIVERIES,
            lambda: send_due_mail(runtime, transport),
            runtime.settings.mail_poll_seconds if poll_interval is None else poll_interval,
        )
    finally:
        transport.close()


def main() -> None:
    senders = {f"mail-{number}": send_mail_loop for number in range(1, MAIL_SENDERS + 1)}
    run_worker(
        bootstrap(),
        HANDLERS,
        loops={**senders, "announcements": fan_out_loop, "gateway": gateway_loop, "webhooks": webhook_loop},
    )
