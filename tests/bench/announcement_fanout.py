"""`make bench`, part ``fanout``: an organiser's announcement to 10,000 and to 20,000 recipients, sent by two
notification worker processes to a real SMTP sink.

What is measured: from the announcement's ``201`` (``POST /notification/api/v1/announcements``) to the moment
the SMTP sink (aiosmtpd, :data:`SINK_PROCESSES` processes of its own on one port, see
:mod:`tests.bench.smtp_sink`) accepted the last of its mails — the fan-out into deliveries, the competing mail senders of both workers, SMTP. The recipients are
pre-filled straight into notification's own projection (``registrations`` of one session, and the session),
in one SQL statement, as the registration bench pre-fills its table: the bench measures the fan-out, not
10,000 registrations. Then the resident memory of each worker.

Beside it, in the same run and on the same RabbitMQ: raw kombu, one process publishing 10,000 messages with
publisher confirms as fast as it can and another consuming them — what the broker alone moves per second.
And the sink's own ceiling: what it accepts from plain smtplib clients, as many sessions as the workers'
mail senders keep, with the suite idle — if the fan-out's rate is close to it, the sink is what limits the
figure, not the suite (on a shared two-core machine one sink process was: hence one per worker).

Goals (issue 8): ≥ 1,000 deliveries per second for 10,000 recipients with two worker processes; 20,000
recipients take ≤ 2.2 × the time of 10,000; each worker ≤ 150 MB resident afterwards. While the 10,000 are
sent, py-spy records one worker (``--idle``: its waiting threads too) into ``<output>-fanout.txt``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

from tests.bench import process_stats, profiling
from tests.bench.pipeline_latency import SPAWN, _kombu_consumer, _kombu_publisher
from tests.bench.smtp_sink import SmtpSinks, sink_ceiling
from tests.support.servers import postgres_database, postgres_problem, rabbitmq_problem, rabbitmq_vhost
from tests.support.suite import Suite
from tests.support.waiting import wait_until

WORKERS = 2
SIZES = (10_000, 20_000)
GOAL_PER_SECOND = 1_000
GOAL_GROWTH = 2.2
GOAL_RESIDENT_MB = 150
#: Sink processes sharing the SMTP port: one per worker, so the sink is not the ceiling (see the docstring).
SINK_PROCESSES = WORKERS

_PREFILL_SESSION = text(
    """
    INSERT INTO sessions (session_id, programme_id, title, starts_at, ends_at, location, state, event_time)
    VALUES (:session_id, NULL, :title, now() AT TIME ZONE 'UTC' + interval '7 days',
            now() AT TIME ZONE 'UTC' + interval '7 days 2 hours', 'Aula Kantor Gubernur', 'published',
            now() AT TIME ZONE 'UTC')
    """
)
_PREFILL_REGISTRANTS = text(
    """
    INSERT INTO registrations (registration_id, session_id, programme_id, email, name, opd, language, status,
                               event_time)
    SELECT gen_random_uuid()::text, :session_id, NULL, :prefix || n || '@kaltaraprov.go.id',
           'Peserta Fan-out ' || n, 'Dinas Komunikasi dan Informatika',
           CASE WHEN n % 2 = 0 THEN 'id' ELSE 'en' END, 'confirmed', now() AT TIME ZONE 'UTC'
    FROM generate_series(1, :count) AS n
    """
)


def prefill_audience(database_url: str, session_id: str, count: int, prefix: str) -> None:
    """``count`` confirmed registrants of one session in notification's projection, in one statement."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(_PREFILL_SESSION, {"session_id": session_id, "title": f"Sosialisasi {prefix}"})
            connection.execute(_PREFILL_REGISTRANTS, {"session_id": session_id, "count": count, "prefix": prefix})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE registrations"))
    finally:
        engine.dispose()


def _postgres_backends(databases: list[str]) -> list[int]:
    """The PostgreSQL backends connected to ``databases`` (their title names the database)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if title.startswith("postgres: ") and any(f" {name} " in title for name in databases):
                pids.append(int(entry.name))
    return pids


class _CpuShares:
    """CPU used while one announcement went out: its workers, PostgreSQL (the backends of the suite's databases
    alive at the end; one that ended meanwhile is missing), the sink, and the machine as a whole (``/proc``)."""

    def __init__(self, workers: list, sink: SmtpSinks, databases: list[str]) -> None:
        self.databases = databases
        self.worker_pids = [worker.pid for worker in workers]
        self.sink_pids = [process.pid for process in sink.processes]
        self.start = self._now()

    def _now(self) -> dict:
        busy, total = process_stats.machine_ticks()
        return {
            "workers": process_stats.cpu_seconds(self.worker_pids),
            "postgres": {pid: process_stats.cpu_seconds([pid]) for pid in _postgres_backends(self.databases)},
            "sink": process_stats.cpu_seconds(self.sink_pids),
            "busy_ticks": busy,
            "total_ticks": total,
        }

    def per_delivery_ms(self, deliveries: int) -> dict[str, float]:
        end = self._now()
        used = {key: end[key] - self.start[key] for key in ("workers", "sink", "busy_ticks", "total_ticks")}
        # a backend that started meanwhile used all its CPU in the window
        used["postgres"] = sum(cpu - self.start["postgres"].get(pid, 0.0) for pid, cpu in end["postgres"].items())
        machine_seconds = used["busy_ticks"] / _TICKS  # busy jiffies of every core together
        ours = used["workers"] + used["postgres"] + used["sink"]
        return {
            "workers": 1000 * used["workers"] / deliveries,
            "postgres": 1000 * used["postgres"] / deliveries,
            "sink": 1000 * used["sink"] / deliveries,
            "busy": 100 * used["busy_ticks"] / max(used["total_ticks"], 1),
            "others": 1000 * max(machine_seconds - ours, 0) / deliveries,
        }


_TICKS = os.sysconf("SC_CLK_TCK")


def raw_kombu_throughput(broker_url: str, count: int) -> tuple[float, float]:
    """(seconds, messages per second) for ``count`` messages published with confirms as fast as one process
    can and consumed by another, until the last one is consumed."""
    queue_name = f"bench-fanout-raw-{uuid.uuid4().hex[:8]}"
    ready = SPAWN.Event()
    receiving, sending = SPAWN.Pipe(duplex=False)
    consumer = SPAWN.Process(target=_kombu_consumer, args=(broker_url, queue_name, count, ready, sending))
    consumer.start()
    sending.close()
    if not ready.wait(60):
        raise RuntimeError("the kombu consumer did not start")
    started = time.monotonic()
    publisher = SPAWN.Process(target=_kombu_publisher, args=(broker_url, queue_name, count, 1e9))
    publisher.start()
    consumed = len(receiving.recv())
    seconds = time.monotonic() - started
    publisher.join(60)
    consumer.join(60)
    if consumed < count:
        raise RuntimeError(f"raw kombu: only {consumed} of {count} messages were consumed")
    return seconds, count / seconds


class FanoutBench:
    def __init__(self, quick: bool, profile_prefix: Path, progress: Callable[[str], None]) -> None:
        self.sizes = tuple(size // 5 for size in SIZES) if quick else SIZES
        self.profile_prefix = profile_prefix
        self.progress = progress

    def run(self, root: Path) -> list[str]:
        problem = postgres_problem() or rabbitmq_problem()
        if problem:
            return [f"skipped: {problem}"]
        with (
            rabbitmq_vhost() as (amqp_url, _),
            postgres_database() as r,
            postgres_database() as n,
            postgres_database() as e,
        ):
            sink = SmtpSinks(root, SINK_PROCESSES)
            suite = Suite(
                root / "suite",
                broker_url=amqp_url,
                smtp_url=sink.url,
                database_urls={"registration": r, "notification": n, "evaluation": e},
            )
            try:
                suite.start()
                for extra in range(1, WORKERS):
                    suite.start_worker("notification", name=f"notification-worker-{extra + 1}")
                workers = [suite.processes[name] for name in suite.workers_of["notification"]]
                sessions = {}
                for size in self.sizes:
                    sessions[size] = str(uuid.uuid4())
                    prefill_audience(n, sessions[size], size, f"fanout{size}.")
                self._warm_up(suite, sink)
                timings = {}
                profile_note = None
                for index, size in enumerate(self.sizes):
                    self.progress(f"fan-out: announcement to {size} recipients, {WORKERS} worker processes ...")
                    recorders = self._start_profiles(workers) if index == 0 else None
                    meter = _CpuShares(workers, sink, [url.rsplit("/", 1)[1] for url in (r, n, e)])
                    timings[size] = self._announce(suite, sink, sessions[size], size, f"fanout{size}.")
                    timings[size]["cpu"] = meter.per_delivery_ms(size)
                    if recorders is not None:
                        profile_note = self._finish_profiles(recorders)
                memory = [process_stats.memory_of(worker.pid) for worker in workers]
                self.progress(f"fan-out: raw kombu, {SIZES[0]} messages ...")
                raw_seconds, raw_rate = raw_kombu_throughput(amqp_url, SIZES[0])
                sessions = WORKERS * self._senders()
                self.progress(
                    f"fan-out: the SMTP sink alone, {self.sizes[0]} mails from {sessions} smtplib sessions ..."
                )
                ceiling = sink_ceiling(sink, sessions, self.sizes[0])
            finally:
                suite.stop()
                sink.stop()
        return self._report(timings, memory, raw_seconds, raw_rate, ceiling, profile_note)

    @staticmethod
    def _warm_up(suite: Suite, sink: SmtpSinks) -> None:
        """One small announcement first: connections made, templates compiled, SMTP sessions open."""
        response = requests.post(
            suite.url("notification", "api/v1/announcements"),
            json={"subject": "Uji", "body": "Uji {name}", "channels": ["email"], "audience": {"emails": ["w@x.id"]}},
            headers=suite.organiser_headers(),
            timeout=30,
        )
        assert response.status_code == 201, response.text
        wait_until(lambda: "w@x.id" in sink.accepted(), timeout=120, what="the warm-up announcement")

    @staticmethod
    def _announce(suite: Suite, sink: SmtpSinks, session_id: str, size: int, prefix: str) -> dict:
        response = requests.post(
            suite.url("notification", "api/v1/announcements"),
            json={
                "subject": "Pengingat {session_title}",
                "body": "Yth. {name}, sampai jumpa di {session_location} pada {session_starts_at}.",
                "channels": ["email"],
                "audience": {"session_id": session_id, "statuses": ["confirmed"]},
            },
            headers=suite.organiser_headers(),
            timeout=30,
        )
        created = time.monotonic()
        assert response.status_code == 201, response.text

        def ours() -> list[float]:
            return list(sink.accepted(prefix).values())

        stamps = wait_until(
            lambda: (found := ours()) and len(found) >= size and found, timeout=900, interval=0.5, what="every mail"
        )
        first, last = min(stamps), max(stamps)
        announcement = requests.get(
            suite.url("notification", f"api/v1/announcements/{response.json()['id']}"),
            headers=suite.organiser_headers(),
            timeout=30,
        ).json()
        return {
            "seconds": last - created,
            "first_mail_after": first - created,
            "per_second": size / (last - created),
            "sent": announcement.get("sent"),
            "failed": announcement.get("failed"),
        }

    def _start_profiles(self, workers):
        """py-spy on every worker while the first announcement goes out (one fans out, both send)."""
        if profiling.py_spy_problem():
            return None
        seconds = max(3, int(self.sizes[0] / GOAL_PER_SECOND * 0.8))
        recorders = []
        for number, worker in enumerate(workers, start=1):
            stacks = Path(f"{self.profile_prefix}-fanout-worker-{number}-stacks.txt")
            recorders.append((profiling.start_recording(worker.pid, seconds, stacks, wall=True), stacks))
        return recorders

    def _finish_profiles(self, recorders) -> str:
        summaries = []
        for number, (process, stacks) in enumerate(recorders, start=1):
            output = process.communicate(timeout=300)[0]
            if process.returncode != 0 or not stacks.exists():
                return f"profile failed: {output[-300:]}"
            title = (
                f"notification worker {number} sending an announcement to {self.sizes[0]} (py-spy --idle, every thread)"
            )
            collapsed = stacks.read_text()
            summaries.append(profiling.summary(title, collapsed, focus="send_due_mail"))
            summaries.append(profiling.summary(f"worker {number}: the fan-out", collapsed, focus="expand_due"))
        summary_path = Path(f"{self.profile_prefix}-fanout.txt")
        summary_path.write_text("\n".join(summaries))
        return f"profile of the notification workers: {summary_path}"

    def _report(
        self, timings: dict, memory: list, raw_seconds: float, raw_rate: float, ceiling: tuple, profile_note
    ) -> list[str]:
        small, large = self.sizes
        lines = [
            f"per announcement: its 201 to the SMTP sink's 250 for its last recipient; {WORKERS} notification "
            f"worker processes (each {self._senders()} mail sender threads); the SMTP sink in {SINK_PROCESSES} "
            "aiosmtpd processes on one port; the audience pre-filled in notification's projection (one SQL "
            "statement); command: python -m tests.bench.run --parts fanout"
        ]
        for size in self.sizes:
            t = timings[size]
            lines.append(
                f"{size} recipients: {t['seconds']:.1f} s, {t['per_second']:.0f} deliveries/s (first mail after "
                f"{t['first_mail_after'] * 1000:.0f} ms; sent {t['sent']}, failed {t['failed']})"
            )
            cpu = t["cpu"]
            lines.append(
                f"  CPU per delivery: workers {cpu['workers']:.2f} ms, PostgreSQL (the suite's backends) "
                f"{cpu['postgres']:.2f} ms, SMTP sink "
                f"{cpu['sink']:.2f} ms; the machine {cpu['busy']:.0f}% busy over {os.cpu_count()} cores, of which "
                f"{cpu['others']:.2f} ms per delivery by everything else on it"
            )
        rate = timings[small]["per_second"]
        verdict = "met" if rate >= GOAL_PER_SECOND else "NOT met"
        lines.append(f"{rate:.0f} deliveries/s for {small} against the goal of ≥ {GOAL_PER_SECOND}/s: {verdict}")
        growth = timings[large]["seconds"] / timings[small]["seconds"]
        verdict = "met" if growth <= GOAL_GROWTH else "NOT met"
        lines.append(f"{large} take {growth:.2f} × the time of {small}, against the goal of ≤ {GOAL_GROWTH}: {verdict}")
        for number, found in enumerate(memory, start=1):
            if found is None:
                lines.append(f"worker {number}: resident memory unavailable")
                continue
            verdict = "met" if found.resident_mb <= GOAL_RESIDENT_MB else "NOT met"
            lines.append(
                f"worker {number}: {found.resident_mb} MB resident afterwards (peak {found.peak_resident_mb} MB), "
                f"against the goal of ≤ {GOAL_RESIDENT_MB} MB: {verdict}"
            )
        lines.append(
            f"raw kombu, {SIZES[0]} messages published with confirms as fast as one process can and consumed by "
            f"another: {raw_seconds:.1f} s, {raw_rate:.0f} messages/s"
        )
        ceiling_seconds, ceiling_rate = ceiling
        lines.append(
            f"the SMTP sink alone ({SINK_PROCESSES} processes), {small} ready-made mails from "
            f"{WORKERS * self._senders()} plain smtplib sessions (one process each), the suite idle: "
            f"{ceiling_seconds:.1f} s, {ceiling_rate:.0f} mails/s; the fan-out of {small} reached "
            f"{100 * rate / ceiling_rate:.0f}% of it"
        )
        if profile_note:
            lines.append(profile_note)
        return lines

    @staticmethod
    def _senders() -> int:
        from services.notification.worker import MAIL_SENDERS

        return MAIL_SENDERS
