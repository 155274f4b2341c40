"""The notification worker process: `labinov worker notification` — consumer, outbox relay, mail sender.

The mail sender waits on the deliveries channel between claims (:func:`shared.worker.work_loop`): a
transaction that queues a delivery calls ``uow.notify_after_commit(DELIVERIES)`` and the sender wakes once it
commits. Every event handler here is wrapped to do that (:func:`_waking_the_sender`), since handling an event
is how most deliveries are queued; a handler that queued none costs one empty claim.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from services.notification.bootstrap import bootstrap
from services.notification.domain import send_due_mail
from services.notification.handlers import HANDLERS
from services.notification.mail import transport_for
from shared.db import UnitOfWork
from shared.events import Event
from shared.messaging.consumer import Handler
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


def _waking_the_sender(handler: Handler) -> Handler:
    """``handler``, and the mail sender woken when its transaction commits."""

    def handle(uow: UnitOfWork, event: Event) -> None:
        handler(uow, event)
        uow.notify_after_commit(DELIVERIES)

    handle.__name__ = getattr(handler, "__name__", "handle")
    handle.__doc__ = handler.__doc__
    return handle


def waking_handlers(handlers: Mapping[str, Handler]) -> dict[str, Handler]:
    return {event_type: _waking_the_sender(handler) for event_type, handler in handlers.items()}


def main() -> None:
    run_worker(bootstrap(), waking_handlers(HANDLERS), loops={"mail": send_mail_loop})
