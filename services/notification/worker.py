"""The notification worker process: `labinov worker notification`."""

from __future__ import annotations

from shared.worker import run_worker
from services.notification.bootstrap import bootstrap
from services.notification.handlers import HANDLERS


def main() -> None:
    run_worker(bootstrap(), HANDLERS)
