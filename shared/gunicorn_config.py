"""Gunicorn settings shared by every web process (``gunicorn -c python:shared.gunicorn_config``).

The access log is one JSON object per request, with the request's correlation id (the ``X-Request-ID``
response header), like every other Labinov log line.
"""

from __future__ import annotations

import os

threads = 4
graceful_timeout = 10
control_socket_disable = True  # several gunicorns on one machine would fight over one control socket
accesslog = "-"
access_log_format = (
    '{"time": "%(t)s", "logger": "gunicorn.access", "request": "%(m)s %(U)s", "status": %(s)s, '
    '"bytes": "%(B)s", "duration_ms": %(M)s, "correlation_id": "%({x-request-id}o)s"}'
)


def child_exit(server, worker) -> None:
    """Retire a dead web worker's live metrics files, so /metrics does not count ghosts."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
