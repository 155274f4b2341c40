"""Correlation ids, JSON log lines and Prometheus metrics: how a Labinov process explains itself.

The correlation id is the thread of one user action through the suite: it comes in as ``X-Request-ID``,
is stamped on every log line, travels in every event the request causes, and is restored by the consumer
that handles such an event, so one ``grep`` follows a registration all the way to the mail it caused.

Metrics live in one registry per process; when ``PROMETHEUS_MULTIPROC_DIR`` is set (``make run`` and
docker-compose set it per service) the web and worker processes of a service write there and ``/metrics``
adds them up.
"""

from __future__ import annotations

import logging
import sys
import uuid
from contextvars import ContextVar

from prometheus_client import Counter, Histogram
from pythonjsonlogger.json import JsonFormatter

_correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def current_correlation_id() -> str:
    """The correlation id of the work in hand; a fresh one for work that no request or event started."""
    value = _correlation_id.get()
    if value is None:
        value = new_correlation_id()
        _correlation_id.set(value)
    return value


def set_correlation_id(value: str | None):
    """Bind ``value`` to the current context; returns a token for :func:`reset_correlation_id`."""
    return _correlation_id.set(value)


def reset_correlation_id(token) -> None:
    _correlation_id.reset(token)


class _CorrelationFilter(logging.Filter):
    def __init__(self, service: str, process_role: str) -> None:
        super().__init__()
        self.service = service
        self.process_role = process_role

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = _correlation_id.get()
        record.service = self.service
        record.process_role = self.process_role
        return True


def configure_logging(service: str, process_role: str, level: str) -> None:
    """One JSON object per line on stderr, each with the service, the process role and correlation id."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_CorrelationFilter(service, process_role))
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}{service}{process_role}{correlation_id}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("kombu", "amqp", "urllib3", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --- metrics: names are part of the interface (dashboards and alerts use them) ---------------------------

HTTP_REQUESTS = Counter(
    "labinov_http_requests_total", "HTTP requests answered", ["service", "method", "endpoint", "status"]
)
HTTP_LATENCY = Histogram(
    "labinov_http_request_duration_seconds", "Time to answer an HTTP request", ["service", "endpoint"]
)
MESSAGES_PUBLISHED = Counter(
    "labinov_messages_published_total", "Outbox rows published to the broker", ["service", "outcome"]
)
MESSAGES_CONSUMED = Counter(
    "labinov_messages_consumed_total",
    "Messages taken from the service's queue, by outcome (handled, duplicate, retried, dead)",
    ["service", "event_type", "outcome"],
)
