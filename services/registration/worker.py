"""The registration worker process: `labinov worker registration` — outbox relay and bulk imports."""

from __future__ import annotations

import logging
import threading

from services.registration.bootstrap import bootstrap
from services.registration.domain import ParticipantLinks, run_due_imports
from services.registration.handlers import HANDLERS
from shared.config import Settings
from shared.runtime import ServiceRuntime
from shared.tokens import _PRIVATE_KEY_FILE as SIGNING_KEY_FILE
from shared.worker import run_worker

log = logging.getLogger(__name__)


def participant_links(settings: Settings) -> ParticipantLinks | None:
    """The links the import loop's registrations carry, signed with the service's own key: the configured one
    (``LABINOV_JWT_PRIVATE_KEY``) or the one already in the data folder (an embedded run: ``labinov run`` makes
    it before it starts any process). Never a key of the worker's own making: the web process would not know
    it, so every link signed with it would be refused. Without the key the imported registrations are mailed
    without a link and ticket, and the worker says so at start."""
    if settings.jwt_private_key_pem is None and not (settings.keys_dir / SIGNING_KEY_FILE).exists():
        log.warning(
            "no signing key (LABINOV_JWT_PRIVATE_KEY) for this worker: registrations from large imports are "
            "mailed without the participant's link and ticket"
        )
        return None
    return ParticipantLinks.from_settings(settings)


def import_loop(runtime: ServiceRuntime, stop: threading.Event, poll_interval: float = 1.0) -> None:
    """Register the lines of large CSV imports, a batch per turn, until ``stop`` (see ``domain``'s
    section on bulk imports: each line is its own transaction; the job is leased, so workers take turns).
    The service's participant links (:func:`participant_links`) are made once, when the loop starts: each
    registration's event carries its participant's link and ticket, as one from the form does."""
    links = participant_links(runtime.settings)
    while not stop.is_set():
        if run_due_imports(runtime.unit_of_work, runtime.engine, links) == 0:
            stop.wait(poll_interval)


def main() -> None:
    run_worker(bootstrap(), HANDLERS, loops={"imports": import_loop})
