"""Running wrk with the participants script, and reading what it measured.

wrk (C, one event loop per thread) is the load generator because a Python client on the same two cores
would be the bottleneck itself. ``participants.lua`` prints one ``BENCH-RESULT {json}`` line from its
``done()``; :func:`run_wrk` parses it into a :class:`WrkResult`, which knows whether the run is valid (no
non-2xx answer, no socket error or timeout).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("participants.lua")
INSTALL_HINT = "wrk is not installed: on Debian/Ubuntu `sudo apt-get install -y wrk`, on macOS `brew install wrk`"


def wrk_problem() -> str | None:
    """Why wrk cannot run here (with how to install it), or ``None``."""
    return None if shutil.which("wrk") else INSTALL_HINT


@dataclass(frozen=True)
class WrkSettings:
    seconds: int = 12
    connections: int = 32
    threads: int = 2
    timeout_seconds: int = 10

    def describe(self) -> str:
        return f"wrk -t{self.threads} -c{self.connections} -d{self.seconds}s --timeout {self.timeout_seconds}s"


@dataclass(frozen=True)
class WrkResult:
    command: str
    requests: int
    duration_seconds: float
    generated: int  # requests the script built (some may still be in flight when wrk stops)
    statuses: dict[int, int]
    socket_errors: dict[str, int]  # connect, read, write, timeout
    latency_ms: dict[str, float]  # min, mean, stdev, max, p50, p75, p90, p99

    @property
    def per_second(self) -> float:
        return self.requests / self.duration_seconds if self.duration_seconds else 0.0

    @property
    def successes(self) -> int:
        return sum(count for status, count in self.statuses.items() if 200 <= status < 300)

    @property
    def problems(self) -> list[str]:
        """What makes this run invalid: any non-2xx answer, socket error or timeout."""
        found = [
            f"{count} x HTTP {status}" for status, count in sorted(self.statuses.items()) if not 200 <= status < 300
        ]
        found += [f"{count} socket {kind} error(s)" for kind, count in self.socket_errors.items() if count]
        if self.requests == 0:
            found.append("no request completed")
        return found

    @property
    def valid(self) -> bool:
        return not self.problems


def run_wrk(url: str, settings: WrkSettings, block: int, seconds: int | None = None) -> WrkResult:
    """Register participants of ``block`` (see ``participants.lua``) at ``url`` for ``seconds``."""
    seconds = seconds or settings.seconds
    command = [
        "wrk", f"-t{settings.threads}", f"-c{settings.connections}", f"-d{seconds}s",
        "--timeout", f"{settings.timeout_seconds}s", "--latency", "-s", str(SCRIPT),
        url, "--", str(block), str(settings.threads),
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((line for line in finished.stdout.splitlines() if line.startswith("BENCH-RESULT ")), None)
    if finished.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({finished.returncode}): {finished.stdout[-2000:]} {finished.stderr[-2000:]}")
    return parse_result(shlex.join(command), line.removeprefix("BENCH-RESULT "))


def parse_result(command: str, text: str) -> WrkResult:
    """A :class:`WrkResult` from the JSON ``participants.lua`` prints (times in microseconds)."""
    data = json.loads(text)
    errors = data["errors"]
    return WrkResult(
        command=command,
        requests=data["requests"],
        duration_seconds=data["duration_us"] / 1e6,
        generated=data["generated"],
        statuses={int(status): count for status, count in data["statuses"].items()},
        socket_errors={kind: errors[kind] for kind in ("connect", "read", "write", "timeout")},
        latency_ms={name: value / 1000 for name, value in data["latency_us"].items()},
    )
