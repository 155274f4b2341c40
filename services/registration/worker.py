"""The registration worker process: `labinov worker registration`."""

from __future__ import annotations

from services.registration.bootstrap import bootstrap
from services.registration.handlers import HANDLERS
from shared.worker import run_worker


def main() -> None:
    run_worker(bootstrap(), HANDLERS)
