"""Waiting for evidence, instead of sleeping and hoping.

:func:`wait_until` polls a condition until it holds. To show that something did *not* happen, a test first waits
for evidence that it could no longer happen — the worker reported that it handled (or skipped as a duplicate) the
event in question, every delivery is finished — and then asserts the absence at once, in the spirit of nameko's
``entrypoint_waiter``. No test waits a fixed time to prove a negative.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float = 30, interval: float = 0.1, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing may not be up yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or check}"
        + (f" (last error: {last_error!r})" if last_error else "")
    )


@dataclass(frozen=True)
class ConsumerOutcome:
    """One line a worker's consumer logged: ``<event type> <event id>: <outcome>``."""

    worker: str
    event_type: str
    event_id: str
    outcome: str  # handled, duplicate, retried, dead


_OUTCOME = re.compile(r"^(?P<type>[a-z_.-]+) (?P<id>[0-9a-f-]{36}): (?P<outcome>handled|duplicate|retried|dead)$")


def consumer_outcomes(worker_logs: dict[str, Path]) -> list[ConsumerOutcome]:
    """Every outcome the named workers' consumers reported so far, read from their JSON log lines."""
    outcomes = []
    for worker, path in worker_logs.items():
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            try:
                message = json.loads(line).get("message", "")
            except (ValueError, AttributeError):
                continue  # not a JSON log line (a traceback, gunicorn's own output)
            match = _OUTCOME.match(message) if isinstance(message, str) else None
            if match:
                outcomes.append(ConsumerOutcome(worker, match["type"], match["id"], match["outcome"]))
    return outcomes
