"""The worker process of a service: its event consumer, its outbox relay and any background loops.

Each part runs in its own thread with its own broker connection; SIGTERM or SIGINT sets one stop event and
the process exits once every part has finished the message in hand. Nothing here assumes it is the only
worker of its service: consumers compete on the queue, relays claim disjoint outbox rows.

Loops that work off a table wait on its wake-up channel between claims (:mod:`shared.messaging.wakeup`):
the relay on the outbox's, a background loop on its own queue's (:func:`wait_for_work`), each polling
anyway every ``LABINOV_RELAY_POLL_MS`` / its own interval, as the safety net.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping
from functools import partial

from shared.housekeeping import housekeeping_loop
from shared.messaging import wakeup
from shared.messaging.consumer import EventProcessor, Handler, consume_events
from shared.messaging.outbox import OutboxRelay
from shared.messaging.topology import SUBSCRIPTIONS
from shared.observability import configure_logging
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)

BackgroundLoop = Callable[[ServiceRuntime, threading.Event], None]


def event_processor(runtime: ServiceRuntime, handlers: Mapping[str, Handler]) -> EventProcessor:
    return EventProcessor(
        service=runtime.name,
        handlers=handlers,
        unit_of_work=runtime.unit_of_work,
        inbox=runtime.inbox,
        max_attempts=runtime.settings.max_handler_attempts,
    )


def run_worker(
    runtime: ServiceRuntime,
    handlers: Mapping[str, Handler],
    loops: Mapping[str, BackgroundLoop] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``): relay, consumer (if subscribed), housekeeping, ``loops``."""
    configure_logging(runtime.name, "worker", runtime.settings.log_level)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())

    relay = OutboxRelay(
        runtime.engine,
        runtime.outbox,
        runtime.settings.broker_url,
        runtime.name,
        poll_interval=runtime.settings.relay_poll_seconds,
    )
    parts: dict[str, Callable[[], None]] = {"relay": lambda: relay.run(stop)}
    if runtime.name in SUBSCRIPTIONS:
        processor = event_processor(runtime, handlers)
        parts["consumer"] = lambda: consume_events(runtime.settings.broker_url, processor, stop)
    for name, loop in {"housekeeping": housekeeping_loop, **(loops or {})}.items():
        parts[name] = partial(loop, runtime, stop)

    threads = [
        threading.Thread(target=_guarded(name, part, stop), name=f"{runtime.name}-{name}", daemon=True)
        for name, part in parts.items()
    ]
    for thread in threads:
        thread.start()
    log.info("worker started: %s", ", ".join(parts))
    while not stop.wait(0.5):
        pass
    for thread in threads:
        thread.join(timeout=15)
    log.info("worker stopped")


def work_loop(
    runtime: ServiceRuntime,
    stop: threading.Event,
    queue: str,
    work_once: Callable[[], int],
    poll_interval: float,
) -> None:
    """Call ``work_once()`` until ``stop``; whenever it found nothing to do (returned 0), wait until a
    transaction rings ``queue``'s channel (:meth:`shared.db.UnitOfWork.notify_after_commit`) or
    ``poll_interval`` seconds have passed. Listens before the first call, so no ring is missed between a
    call and the wait; a lost ring only delays the work until the poll."""
    listener = wakeup.listen(runtime.engine, wakeup.channel(runtime.name, queue))
    try:
        while not stop.is_set():
            if work_once() == 0:
                wakeup.wait_for_work(listener, stop, poll_interval)
    finally:
        listener.close()


def _guarded(name: str, part: Callable[[], None], stop: threading.Event) -> Callable[[], None]:
    """Keep a part alive: an unexpected crash is logged and the part restarts after a pause."""

    def run() -> None:
        while not stop.is_set():
            try:
                part()
                return
            except Exception:
                log.exception("worker part %s crashed; restarting in 2s", name)
                stop.wait(2)

    return run
