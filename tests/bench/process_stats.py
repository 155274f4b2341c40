"""What the processes under test cost: resident memory of gunicorn's workers, CPU seconds, machine load.

Read straight from ``/proc`` (Linux), so the benchmark needs no extra package. On another system the
figures are reported as unavailable rather than guessed.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (gunicorn's workers, for its master's pid)."""
    found = []
    for entry in PROC.glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


@dataclass(frozen=True)
class Memory:
    pid: int
    resident_mb: float  # VmRSS now
    peak_resident_mb: float  # VmHWM: the most it was resident at any time


def memory_of(pid: int) -> Memory | None:
    try:
        fields = dict(line.split(":", 1) for line in (PROC / str(pid) / "status").read_text().splitlines())
    except OSError:
        return None

    def megabytes(name: str) -> float:
        return round(int(fields[name].split()[0]) / 1024, 1)  # the kernel writes kB

    return Memory(pid, megabytes("VmRSS"), megabytes("VmHWM"))


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes ``pids`` have used so far (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _TICKS


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children (wrk, after its run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of every core since boot, from the first line of ``/proc/stat``."""
    values = [int(v) for v in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU used during one measured window: by the web workers, by wrk, and by the whole machine."""

    def __init__(self, web_pids: list[int]) -> None:
        self.web_pids = web_pids

    def __enter__(self) -> CpuMeter:
        self._web = cpu_seconds(self.web_pids)
        self._children = children_cpu_seconds()
        self._machine = machine_ticks()
        return self

    def __exit__(self, *_exc) -> None:
        busy, total = machine_ticks()
        self.web_seconds = round(cpu_seconds(self.web_pids) - self._web, 1)
        self.wrk_seconds = round(children_cpu_seconds() - self._children, 1)
        self.machine_busy_percent = round(100 * (busy - self._machine[0]) / max(total - self._machine[1], 1), 1)

    def describe(self) -> str:
        return (
            f"CPU during the run: web workers {self.web_seconds} s, wrk {self.wrk_seconds} s, "
            f"machine {self.machine_busy_percent}% busy over {os.cpu_count()} cores"
        )
