"""The registration worker process: `labinov worker registration`."""

from __future__ import annotations

from shared.worker import run_worker
from services.registration.bootstrap import bootstrap
from services.registration.handlers import HANDLERS


def main() -> None:
    run_worker(bootstrap(), HANDLERS)
