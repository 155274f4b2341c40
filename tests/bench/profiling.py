"""Sampling the registration web process with py-spy while wrk loads it, and naming where the time goes.

py-spy reads the workers' stacks from outside the process (``--nonblocking``: it does not even pause
them), so the profile shows the real code at the real load. It records the gunicorn master with
``--subprocesses`` (its two workers) into collapsed stacks (``--format raw``: one line per distinct stack,
``frame;frame;... count``), which :func:`rank_frames` folds into rankings:

* **own** — samples where the frame was the innermost one: the code that was itself running (or waiting);
* **total** — samples where the frame was anywhere on the stack: the time spent in it and what it called
  (frames on every stack, like gunicorn's and Flask's dispatch, are left out: they tell nothing);
* **innermost suite frame** — each sample charged to the deepest frame in ``services/`` or ``shared/``:
  which line of the suite's own code a request was in (e.g. which SQL statement it was waiting on).

Two recordings are useful: ``cpu`` (py-spy's default, only threads that are running; by function) says
what burns the cores; ``wall`` (``--idle``, waiting threads too; by line) says where a request's time
goes, including waits on PostgreSQL's row lock and on the network. Idle pool threads and gunicorn's main
loop are in the wall samples too, so the rankings that matter are those of the samples inside a request. py-spy is a profiling tool of the benchmark, not a dependency
of the project: when it is missing the profile is skipped and the report says how to install it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "py-spy is not installed: `.venv/bin/python -m pip install py-spy`"


def py_spy_problem() -> str | None:
    return None if py_spy() else INSTALL_HINT


def py_spy() -> str | None:
    """py-spy on PATH, or installed in this virtualenv beside its python."""
    beside_python = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside_python) if beside_python.exists() else None)


def start_recording(master_pid: int, seconds: int, output: Path, wall: bool) -> subprocess.Popen:
    """Start py-spy on gunicorn's master and its workers for ``seconds``; wait on the returned process."""
    command = [
        py_spy(), "record", "--pid", str(master_pid), "--subprocesses", "--nonblocking", "--rate", "200",
        "--duration", str(seconds), "--format", "raw", "--output", str(output),
        *(["--idle"] if wall else ["--function"]),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _frames(stack: str) -> list[str]:
    """The Python frames of one collapsed stack, outermost first, without py-spy's process/thread labels."""
    return [frame for frame in stack.split(";") if not frame.startswith(("process ", "thread ("))]


def _stacks(collapsed: str, focus: str | None) -> list[tuple[list[str], int]]:
    """(frames, samples) of each stack; with ``focus``, only the stacks with a frame containing it."""
    stacks = []
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = _frames(stack)
        if frames and count_text.isdigit() and (focus is None or any(focus in frame for frame in frames)):
            stacks.append((frames, int(count_text)))
    return stacks


def _is_suite_code(frame: str) -> bool:
    return "(services/" in frame or "(shared/" in frame


@dataclass(frozen=True)
class Ranking:
    """Frames ranked by samples, three ways (see the module docstring)."""

    samples: int
    own: list[tuple[str, int]]
    total: list[tuple[str, int]]
    innermost_suite_frame: list[tuple[str, int]]  # each sample charged to the deepest services/ or shared/ frame


def rank_frames(collapsed: str, limit: int = 25, focus: str | None = None) -> Ranking:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    suite: Counter[str] = Counter()
    samples = 0
    for frames, count in _stacks(collapsed, focus):
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
        suite[next((frame for frame in reversed(frames) if _is_suite_code(frame)), "(outside the suite's code)")] += (
            count
        )
    telling = [(frame, count) for frame, count in total.most_common() if count < 0.99 * samples]  # not on every stack
    return Ranking(samples, own.most_common(limit), telling[:limit], suite.most_common(limit))


def summary(title: str, collapsed: str, focus: str, limit: int = 25) -> str:
    """A plain-text ranking of all samples, then of the samples inside a request (stacks through ``focus``)."""
    everything = rank_frames(collapsed, limit)
    requests = rank_frames(collapsed, limit, focus)
    if not everything.samples:
        return f"## {title}\nno samples\n"

    def table(rows: list[tuple[str, int]], of: int) -> list[str]:
        return [f"{100 * count / of:5.1f}%  {count:6d}  {frame}" for frame, count in rows]

    lines = [f"## {title}", f"{everything.samples} samples in all; {requests.samples} inside {focus}", ""]
    lines += [f"### all samples: top {limit} by own samples", *table(everything.own, everything.samples), ""]
    if requests.samples:
        of = requests.samples
        lines += [f"### inside {focus}: each sample charged to the innermost frame of services/ or shared/"]
        lines += [*table(requests.innermost_suite_frame, of), ""]
        lines += [f"### inside {focus}: top {limit} by own samples", *table(requests.own, of), ""]
        lines += [
            f"### inside {focus}: top {limit} by total samples (the frame and all it called; frames on every stack left out)"
        ]
        lines += table(requests.total, of)
    return "\n".join(lines) + "\n"
