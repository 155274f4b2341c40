"""The notification worker process: `labinov worker notification` — consumer, outbox relay, mail sender.

The mail sender waits on the deliveries channel between claims (:func:`shared.worker.work_loop`): the
transaction that queues a delivery (``domain.queue_messages``: event handlers, the announcement fan-out) rings
it, and the sender wakes once it commits. The announcement loop expands due announcements into deliveries.
"""

from __future__ import annotations

import logging
import threading

from services.notification.announcements import fan_out_loop
from services.notification.bootstrap import bootstrap
from services.notification.domain import send_due_mail
from services.notification.handlers import HANDLERS
from services.notification.mail import transport_for
from shared.messaging.wakeup import DELIVERIES
from shared.runtime import ServiceRuntime
from shared.worker import run_worker, work_loop

log = logging.getLogger(__name__)


def send_mail_loop(runtime: ServiceRuntime, stop: threading.Event, poll_interval: float | None = None) -> None:
    """Send due deliveries until ``stop``, woken when one is queued; an unreachable mail server only delays
    them."""
    transport = transport_for(runtime.settings.smtp_url, runtime.settings.mailbox_dir)
    work_loop(
        runtime,
        stop,
        DELIVERIES,
        lambda: send_due_mail(runtime, transport),
        runtime.settings.mail_poll_seconds if poll_interval is None else poll_interval,
    )


def main() -> None:
    run_worker(bootstrap(), HANDLERS, loops={"mail": send_mail_loop, "announcements": fan_out_loop})
