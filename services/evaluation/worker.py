"""The evaluation worker process: `labinov worker evaluation`."""

from __future__ import annotations

from shared.worker import run_worker
from services.evaluation.bootstrap import bootstrap
from services.evaluation.handlers import HANDLERS


def main() -> None:
    run_worker(bootstrap(), HANDLERS)
