"""The registration rush part of ``make bench``: the suite's registration endpoint against its ceiling.

Measured in one run, side by side, with wrk and ``participants.lua`` (every request a new valid participant):

(a) ``POST /registration/api/v1/sessions/{id}/registrations`` into one session of capacity 10,000
    (every registration confirmed);
(b) the same into a session of capacity 50 (all but 50 waitlisted);
(c) the ceiling: ``ceiling_app.py`` (Flask + the same ``ParticipantSchema`` + one INSERT and one commit per
    request) under the same gunicorn settings;

then the growth of latency: p50 with 1,000 registrations already in a session against p50 with 100,000
(pre-filled with one ``INSERT ... SELECT``), the resident memory of each web worker after all that, and a
py-spy profile of the registration web process under the (a) load.

Processes: registration's web process is started exactly as ``labinov web registration`` starts it
(``services.cli.web_command``: gunicorn, the shared config, 2 workers), with its worker running so the
outbox drains into RabbitMQ, on a fresh PostgreSQL database and a fresh RabbitMQ vhost. Before each
measured run the outbox is drained, so one run's relay work does not land in the next run's figures; the
two cores are shared by wrk, gunicorn, the relay and PostgreSQL alike (the CPU line of each run says who
used them). ``LABINOV_PUBLIC_RATE_LIMIT=off``: benchmarks are not throttled.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

from services.cli import gunicorn_command
from tests.bench import profiling
from tests.bench.ceiling_app import CREATE_TABLE
from tests.bench.participants import body_of, prefill_registrations
from tests.bench.process_stats import CpuMeter, Memory, children_of, memory_of
from tests.bench.wrk import WrkResult, WrkSettings, run_wrk, wrk_problem
from tests.support.servers import free_port, postgres_database, rabbitmq_vhost
from tests.support.suite import ORGANISER, Suite
from tests.support.waiting import wait_until

GOAL_RATIO = 0.7  # (a) and (b) each at least 0.7 x (c)
GOAL_GROWTH = 1.2  # p50 with 100,000 registrations at most 1.2 x p50 with 1,000
GOAL_RSS_MB = 150  # each web worker after the run
ENVIRONMENT = {"LABINOV_PUBLIC_RATE_LIMIT": "off"}
REQUEST_FRAME = "Flask.wsgi_app"  # the stacks through it are requests (validation included, unlike the view's)


@dataclass(frozen=True)
class RushSettings:
    wrk: WrkSettings = field(default_factory=WrkSettings)
    warmup_seconds: int = 3
    growth_seconds: int = 10
    profile_seconds: int = 8
    growth_small: int = 1_000
    growth_large: int = 100_000

    @classmethod
    def quick(cls) -> RushSettings:
        return cls(WrkSettings(seconds=5), warmup_seconds=2, growth_seconds=5, profile_seconds=4)


@dataclass
class Run:
    """One measured wrk run and what it cost."""

    label: str
    result: WrkResult
    cpu: CpuMeter
    note: str = ""

    def lines(self) -> list[str]:
        r, latency = self.result, self.result.latency_ms
        validity = "valid" if r.valid else "INVALID: " + ", ".join(r.problems)
        return [
            f"{self.label}{f' ({self.note})' if self.note else ''}",
            f"    command: {r.command}",
            f"    registrations per second: {r.per_second:.1f}  ({r.successes} x 2xx in {r.duration_seconds:.1f} s; "
            f"statuses {dict(sorted(r.statuses.items()))}; {validity})",
            "    latency ms: "
            + "  ".join(f"{name} {latency[name]:.1f}" for name in ("p50", "p75", "p90", "p99", "max", "mean")),
            f"    {self.cpu.describe()}",
        ]


def _ratio_line(name: str, value: float, goal: str, met: bool) -> str:
    return f"{name}: {value:.2f}  (goal {goal}: {'met' if met else 'NOT met'})"


class RegistrationRush:
    """Runs the part; ``progress`` gets one line per step, :meth:`run` returns the report's lines."""

    def __init__(self, root: Path, profile_prefix: Path, settings: RushSettings, progress: Callable[[str], None]):
        self.root = root
        self.profile_prefix = profile_prefix
        self.settings = settings
        self.progress = progress
        self.blocks: dict[str, int] = {}  # the next participant block of each session (block 0: pre-fill)
        self.runs: list[Run] = []
        self.notes: list[str] = []
        self.ceiling_memory: list[Memory | None] = []
        self.memory_after_warmup: list[Memory | None] = []

    # -- the part as a whole --------------------------------------------------------------------------------

    def run(self) -> list[str]:
        problem = wrk_problem()
        if problem:
            self.progress(f"SKIPPED the registration rush: {problem}")
            return [f"skipped: {problem}"]
        with rabbitmq_vhost() as (amqp_url, _), postgres_database() as suite_db, postgres_database() as ceiling_db:
            ceiling = self.measure_ceiling(ceiling_db)
            suite = Suite(
                self.root / "suite",
                broker_url=amqp_url,
                database_urls={"registration": suite_db},
                extra_env=ENVIRONMENT,
            )
            try:
                self.start_registration(suite)
                return self.measure_suite(suite, suite_db, ceiling)
            except Exception:
                self.progress("the suite failed; its log tails:\n" + suite.log_tails(40))
                raise
            finally:
                suite.stop()

    # -- (c) the ceiling ------------------------------------------------------------------------------------

    def measure_ceiling(self, database_url: str) -> Run:
        engine = create_engine(database_url)
        with engine.begin() as connection:
            connection.execute(text(CREATE_TABLE))
        engine.dispose()
        port = free_port()
        command = gunicorn_command("tests.bench.ceiling_wsgi:app", "bench-ceiling", "127.0.0.1", port, "--workers", "2")
        log = open(self.root / "ceiling.log", "ab")
        env = {**os.environ, **ENVIRONMENT, "LABINOV_BENCH_CEILING_DATABASE_URL": database_url}
        master = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/registrations"
        try:
            wait_until(
                lambda: requests.post(url, json=body_of(999_999), timeout=2).status_code == 201,
                timeout=60,
                what="the ceiling app to answer",
            )
            self.progress(f"(c) ceiling app up on :{port} (pid {master.pid}); warming up")
            run_wrk(url, self.settings.wrk, block=1, seconds=self.settings.warmup_seconds)
            run = self.measure(
                "(c) ceiling: Flask + ParticipantSchema + one INSERT/commit",
                url,
                children_of(master.pid),
                block=2,
                note="served by: " + shlex.join(["python", *command[1:]]),
            )
            self.ceiling_memory = [memory_of(pid) for pid in children_of(master.pid)]
            return run
        finally:
            master.send_signal(signal.SIGTERM)
            master.wait(20)
            log.close()

    # -- the suite ------------------------------------------------------------------------------------------

    def start_registration(self, suite: Suite) -> None:
        """Registration's web process and worker only: the rush touches no other service."""
        self.progress("starting registration (web: labinov web registration, 2 workers; its worker) ...")
        suite.labinov("migrate", "registration")
        credentials = ("--email", ORGANISER["email"], "--password", ORGANISER["password"])
        suite.labinov("user", "create", "--role", "organiser", "--name", "Panitia", *credentials)
        suite.start_web("registration")
        suite.start_worker("registration")
        wait_until(
            lambda: requests.get(suite.url("registration", "health/ready"), timeout=2).status_code == 200,
            timeout=60,
            what="registration to be ready",
        )

    def measure_suite(self, suite: Suite, database_url: str, ceiling: Run) -> list[str]:
        engine = create_engine(database_url)
        master_pid = suite.processes["registration-web"].pid
        workers = children_of(master_pid)
        self.progress(f"registration web up: gunicorn master {master_pid}, workers {workers}; warming up")
        warmup = suite.create_session(capacity=10_000, title="Warm-up session")
        self.wrk_into(suite, warmup, self.settings.warmup_seconds)
        self.memory_after_warmup = [memory_of(pid) for pid in workers]

        rush = suite.create_session(capacity=10_000, title="Rush session (capacity 10,000)")
        self.drain(engine)
        one_session = self.measure(
            "(a) suite: POST .../sessions/{id}/registrations, one session of capacity 10,000",
            self.registrations_url(suite, rush),
            workers,
            block=self.next_block(rush),
        )
        self.notes.append(
            f"outbox drained {self.drain(engine):.1f} s after (a) ended (the relay publishes to RabbitMQ)"
        )
        self.profile(suite, engine, rush, master_pid)

        small = suite.create_session(capacity=50, title="Small session (capacity 50)")
        self.drain(engine)
        waitlisted = self.measure(
            "(b) suite: the same into a session of capacity 50 (all but 50 waitlisted)",
            self.registrations_url(suite, small),
            workers,
            block=self.next_block(small),
        )
        statuses = self.statuses(engine, small)
        waitlisted.note = f"session holds {statuses}"

        growth_lines = self.measure_growth(suite, engine, workers)
        memory = [memory_of(pid) for pid in workers]
        engine.dispose()
        return self.report(ceiling, one_session, waitlisted, growth_lines, memory)

    def measure_growth(self, suite: Suite, engine, workers: list[int]) -> list[str]:
        s = self.settings
        growth = suite.create_session(capacity=10_000, title="Growth session (capacity 10,000)")
        seconds = s.growth_seconds
        self.progress(f"growth: pre-filling {s.growth_small:,} registrations")
        prefill_registrations(engine, growth, first=0, count=s.growth_small)
        self.drain(engine)
        before_small = self.count(engine, growth)
        small = self.measure(
            f"growth: {before_small:,} registrations already in the session",
            self.registrations_url(suite, growth),
            workers,
            block=self.next_block(growth),
            seconds=seconds,
        )
        existing = self.count(engine, growth)
        self.progress(f"growth: pre-filling up to {s.growth_large:,} registrations (INSERT ... SELECT)")
        started = time.perf_counter()
        prefill_registrations(engine, growth, first=s.growth_small, count=max(s.growth_large - existing, 0))
        self.notes.append(
            f"pre-filled {max(s.growth_large - existing, 0):,} rows in {time.perf_counter() - started:.1f} s (incl. ANALYZE)"
        )
        self.drain(engine)
        before_large = self.count(engine, growth)
        large = self.measure(
            f"growth: {before_large:,} registrations already in the session",
            self.registrations_url(suite, growth),
            workers,
            block=self.next_block(growth),
            seconds=seconds,
        )
        large.note = f"session holds {self.statuses(engine, growth)} after the run"
        ratio = large.result.latency_ms["p50"] / small.result.latency_ms["p50"]
        return [
            *small.lines(),
            *large.lines(),
            _ratio_line(
                f"p50({before_large:,}) / p50({before_small:,})", ratio, f"<= {GOAL_GROWTH}", ratio <= GOAL_GROWTH
            ),
        ]

    # -- one measured run -----------------------------------------------------------------------------------

    def measure(
        self, label: str, url: str, web_pids: list[int], block: int, seconds: int | None = None, note: str = ""
    ) -> Run:
        self.progress(f"{label}: wrk for {seconds or self.settings.wrk.seconds} s ...")
        with CpuMeter(web_pids) as cpu:
            result = run_wrk(url, self.settings.wrk, block=block, seconds=seconds)
        run = Run(label, result, cpu, note)
        self.runs.append(run)
        self.progress(
            f"    {result.per_second:.1f}/s, p50 {result.latency_ms['p50']:.1f} ms, "
            f"{'valid' if result.valid else 'INVALID: ' + ', '.join(result.problems)}"
        )
        return run

    def wrk_into(self, suite: Suite, session_id: str, seconds: int) -> WrkResult:
        return run_wrk(
            self.registrations_url(suite, session_id), self.settings.wrk, self.next_block(session_id), seconds
        )

    def profile(self, suite: Suite, engine, session_id: str, master_pid: int) -> None:
        """py-spy on the web process during two more (a)-type runs: CPU only, then wall time (waits too)."""
        problem = profiling.py_spy_problem()
        if problem:
            self.notes.append(f"profile skipped: {problem}")
            return
        seconds = self.settings.profile_seconds
        for kind in ("cpu", "wall"):
            self.drain(engine)
            self.progress(f"profiling the registration web process ({kind}) under (a) load for {seconds} s ...")
            stacks = Path(f"{self.profile_prefix}-{kind}-stacks.txt")
            recorder = profiling.start_recording(master_pid, seconds, stacks, wall=kind == "wall")
            result = self.wrk_into(suite, session_id, seconds)
            output, _ = recorder.communicate(timeout=60)
            if recorder.returncode != 0 or not stacks.exists():
                self.notes.append(f"profile {kind} failed: {output[-500:]}")
                continue
            summary_path = Path(f"{self.profile_prefix}-{kind}.txt")
            title = (
                f"registration web process, {kind} profile ({shlex.join(recorder.args[1:])}), "
                f"under {result.command}: {result.per_second:.1f}/s while profiled"
            )
            summary_path.write_text(profiling.summary(title, stacks.read_text(), focus=REQUEST_FRAME))
            self.notes.append(f"profile ({kind}): {summary_path} (collapsed stacks: {stacks})")

    # -- the database ---------------------------------------------------------------------------------------

    def drain(self, engine, timeout: float = 180) -> float:
        """Wait until the worker has published every outbox row; returns how long that took."""
        started = time.perf_counter()
        wait_until(lambda: self._pending(engine) == 0, timeout=timeout, interval=0.2, what="the outbox to drain")
        return time.perf_counter() - started

    @staticmethod
    def _pending(engine) -> int:
        with engine.connect() as connection:
            return connection.scalar(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))

    @staticmethod
    def count(engine, session_id: str) -> int:
        with engine.connect() as connection:
            return connection.scalar(
                text("SELECT count(*) FROM registrations WHERE session_id = :id"), {"id": session_id}
            )

    @staticmethod
    def statuses(engine, session_id: str) -> dict[str, int]:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT status, count(*) FROM registrations WHERE session_id = :id GROUP BY status ORDER BY status"
                ),
                {"id": session_id},
            )
            return {status: count for status, count in rows}

    # -- helpers --------------------------------------------------------------------------------------------

    def next_block(self, session_id: str) -> int:
        """A participant block no earlier run into this session used (see ``participants.lua``)."""
        block = self.blocks.get(session_id, 1)
        self.blocks[session_id] = block + 1
        return block

    @staticmethod
    def registrations_url(suite: Suite, session_id: str) -> str:
        return suite.url("registration", f"api/v1/sessions/{session_id}/registrations")

    def report(
        self, ceiling: Run, one_session: Run, waitlisted: Run, growth: list[str], memory: list[Memory | None]
    ) -> list[str]:
        c = ceiling.result.per_second
        a_ratio = one_session.result.per_second / c if c else 0.0
        b_ratio = waitlisted.result.per_second / c if c else 0.0
        invalid = [run.label for run in self.runs if not run.result.valid]
        lines = [
            "settings: wrk with tests/bench/participants.lua (a new valid participant per request), "
            f"{self.settings.wrk.describe()}; PostgreSQL + RabbitMQ; LABINOV_PUBLIC_RATE_LIMIT=off; "
            f"suite = `labinov web registration` (gunicorn --config python:shared.gunicorn_config --workers 2) "
            "+ `labinov worker registration`",
            *ceiling.lines(),
            *one_session.lines(),
            *waitlisted.lines(),
            _ratio_line("ratio (a)/(c)", a_ratio, f">= {GOAL_RATIO}", a_ratio >= GOAL_RATIO),
            _ratio_line("ratio (b)/(c)", b_ratio, f">= {GOAL_RATIO}", b_ratio >= GOAL_RATIO),
            *growth,
            "resident memory of each registration web worker after the run (VmRSS, peak VmHWM), "
            f"goal <= {GOAL_RSS_MB} MB each:",
        ]
        for m in memory:
            if m is None:
                lines.append("    a worker is gone (it was restarted during the run?)")
                continue
            verdict = "met" if m.resident_mb <= GOAL_RSS_MB else "NOT met"
            lines.append(f"    pid {m.pid}: {m.resident_mb} MB (peak {m.peak_resident_mb} MB) — {verdict}")
        lines.append(
            "the same workers after the warm-up: "
            + ", ".join(f"pid {m.pid} {m.resident_mb} MB" for m in self.memory_after_warmup if m)
        )
        lines.append(
            "for comparison, the ceiling app's workers after its run: "
            + ", ".join(f"{m.resident_mb} MB" for m in self.ceiling_memory if m)
        )
        lines += [f"note: {note}" for note in self.notes]
        lines.append(
            "RESULT INVALID: non-2xx answers or socket errors in " + "; ".join(invalid)
            if invalid
            else "every measured run answered 2xx only, with no socket error"
        )
        return lines
