"""Waiting for something to become true, instead of sleeping and hoping."""

from __future__ import annotations

import time
from collections.abc import Callable
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


def stays_true(check: Callable[[], bool], duration: float, interval: float = 0.1) -> bool:
    """True if ``check`` holds for the whole ``duration`` (to show that something does NOT happen)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not check():
            return False
        time.sleep(interval)
    return True
