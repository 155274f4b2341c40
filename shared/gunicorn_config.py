"""Gunicorn settings shared by every web process (``gunicorn -c python:shared.gunicorn_config``).

Every line gunicorn writes is one JSON object, like every other Labinov log line, whatever a client sends:
the access log line is built by :class:`JsonLogger` with a JSON encoder, not by filling a format string
(a ``%0d%0a`` in a path decodes to a real line break, which a format string copies into the log and so
forges a second line). The access line carries the request's correlation id (the ``X-Request-ID``
response header) and the client's address as the service saw it (after ``ProxyFix``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from gunicorn.glogging import Logger

threads = 4
graceful_timeout = 10
control_socket_disable = True  # several gunicorns on one machine would fight over one control socket
accesslog = "-"


class _JsonLineFormatter(logging.Formatter):
    """gunicorn's own messages (start-up, worker exits, errors) as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line)


class JsonLogger(Logger):
    """gunicorn's logger, writing each access line as ``json.dumps`` of its fields."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(_JsonLineFormatter())
        for handler in self.access_log.handlers:
            handler.setFormatter(logging.Formatter("%(message)s"))  # the message is already a JSON object

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        response_headers = dict((name.lower(), value) for name, value in resp.headers)
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "logger": "gunicorn.access",
            "request": f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}",
            "status": int(status) if str(status).isdigit() else status,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": request_time.seconds * 1000 + request_time.microseconds // 1000,
            "client": environ.get("REMOTE_ADDR"),
            "correlation_id": response_headers.get("x-request-id"),
        }
        try:
            self.access_log.info(json.dumps(line, ensure_ascii=True))
        except Exception:
            self.exception("could not write the access log line")


logger_class = JsonLogger


def child_exit(server, worker) -> None:
    """Retire a dead web worker's live metrics files, so /metrics does not count ghosts."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
