"""The registration worker process: `labinov worker registration` — outbox relay and bulk imports."""

from __future__ import annotations

import threading

from services.registration.bootstrap import bootstrap
from services.registration.domain import ParticipantLinks, run_due_imports
from services.registration.handlers import HANDLERS
from shared.runtime import ServiceRuntime
from shared.worker import run_worker


def import_loop(runtime: ServiceRuntime, stop: threading.Event, poll_interval: float = 1.0) -> None:
    """Register the lines of large CSV imports, a batch per turn, until ``stop`` (see ``domain``'s
    section on bulk imports: each line is its own transaction; the job is leased, so workers take turns).
    The service's participant links are made once, when the loop starts: each registration's event carries
    its participant's link and ticket, as one from the form does."""
    links = ParticipantLinks.from_settings(runtime.settings)
    while not stop.is_set():
        if run_due_imports(runtime.unit_of_work, runtime.engine, links) == 0:
            stop.wait(poll_interval)


def main() -> None:
    run_worker(bootstrap(), HANDLERS, loops={"imports": import_loop})
