"""The evaluation worker process: `labinov worker evaluation`."""

from __future__ import annotations

from services.evaluation.bootstrap import bootstrap
from services.evaluation.handlers import HANDLERS
from shared.worker import run_worker


def main() -> None:
    run_worker(bootstrap(), HANDLERS)
