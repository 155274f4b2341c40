"""Gunicorn settings shared by every web process (``gunicorn -c python:shared.gunicorn_config``)."""

from __future__ import annotations

import os


def child_exit(server, worker) -> None:
    """Retire a dead web worker's live metrics files, so /metrics does not count ghosts."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
