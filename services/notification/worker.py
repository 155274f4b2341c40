"""The notification worker process: `labinov worker notification` — consumer, outbox relay, mail sender."""

from __future__ import annotations

import logging
import threading

from services.notification.bootstrap import bootstrap
from services.notification.domain import send_due_mail
from services.notification.handlers import HANDLERS
from services.notification.mail import transport_for
from shared.runtime import ServiceRuntime
from shared.worker import run_worker

log = logging.getLogger(__name__)


def send_mail_loop(runtime: ServiceRuntime, stop: threading.Event, poll_interval: float = 0.5) -> None:
    """Send due deliveries until ``stop``; an unreachable mail server only delays them."""
    transport = transport_for(runtime.settings.smtp_url, runtime.settings.mailbox_dir)
    while not stop.is_set():
        if send_due_mail(runtime, transport) == 0:
            stop.wait(poll_interval)


def main() -> None:
    run_worker(bootstrap(), HANDLERS, loops={"mail": send_mail_loop})
