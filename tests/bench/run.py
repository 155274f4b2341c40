"""`make bench`: measured figures of the suite's real processes, written to a file.

Four parts (``--parts``, all by default), each printing its progress as it goes:

* ``registration`` — the registration rush with wrk (``registration_rush.py``): the suite's registration
  endpoint into a session of capacity 10,000 and one of capacity 50, against the ceiling of a minimal Flask
  app under the same gunicorn; latency growth from 1,000 to 100,000 registrations in a session; resident
  memory of each web worker; a py-spy profile of the web process (``<output>-profile-*.txt``). Needs
  PostgreSQL, RabbitMQ and wrk, and says so when one is missing.
* ``mail`` — the event pipeline: the suite (gunicorn web processes + workers) on the real PostgreSQL and
  RabbitMQ when they are reachable, and on the embedded defaults; N registrations for one session from C
  concurrent clients through HTTP (throughput and latency percentiles, confirmed == capacity), and the time
  from the first registration until every confirmation mail reached a real SMTP server (aiosmtpd), i.e.
  registration → outbox → relay → broker → consumer → mail.
* ``pipeline`` — the latency of the event → mail pipeline (``pipeline_latency.py``): registrations at a
  steady rate from an open-loop generator process, each timed from its 201 (client side) to the moment a
  separate SMTP sink process accepted its confirmation mail; 100/s for 30 s on PostgreSQL + RabbitMQ (goal
  p50 ≤ 30 ms, p99 ≤ 150 ms) and 20/s on the embedded defaults (p99 ≤ 500 ms), each beside the raw kombu
  publish → consume latency between two processes on the same broker; a py-spy profile of the notification
  worker under the load (``<output>-profile-pipeline.txt``).
* ``fanout`` — an announcement to 10,000 and to 20,000 recipients (``announcement_fanout.py``), pre-filled in
  notification's projection, sent by two notification worker processes to an SMTP sink process: deliveries
  per second (goal ≥ 1,000), the growth from 10,000 to 20,000 (≤ 2.2 ×), each worker's resident memory
  afterwards (≤ 150 MB), beside raw kombu publish + consume of 10,000 messages on the same RabbitMQ; a py-spy
  profile of one worker (``<output>-profile-fanout.txt``).
* ``results`` — the statistics of an evaluation round (``round_results.py``): the time to compute the results
  of 3,000 proposals × 3 evaluators × 5 criteria (normalisation and agreement included; goal ≤ 0.5 s) beside
  its ceiling, the time to compute only the weighted totals. Pure Python in this process: needs no server.

``--quick`` shortens every wrk run (and the mail part's registrations) for a look in about two minutes.
The machine's cores are shared with whatever else runs: figures from a busy machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from tests.support.servers import postgres_database, postgres_problem, rabbitmq_problem, rabbitmq_vhost
from tests.support.smtp import SmtpServer
from tests.support.suite import Suite, participant
from tests.support.waiting import wait_until


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(suite: Suite, smtp: SmtpServer, registrations: int, clients: int, capacity: int) -> dict:
    session_id = suite.create_session(capacity=capacity, title="Benchmark session")
    people = [participant(10_000 + i) for i in range(registrations)]
    latencies: list[float] = []
    statuses: list[str] = []

    def register(person: dict) -> None:
        started = time.perf_counter()
        response = suite.register(session_id, person)
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 201, response.text
        statuses.append(response.json()["status"])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(register, people))
    http_seconds = time.perf_counter() - started
    wait_until(lambda: len(smtp.messages) >= registrations, timeout=600, interval=0.05, what="every mail")
    pipeline_seconds = time.perf_counter() - started
    return {
        "registrations": registrations,
        "concurrent clients": clients,
        "capacity": capacity,
        "confirmed": statuses.count("confirmed"),
        "waitlisted": statuses.count("waitlisted"),
        "HTTP registrations per second": round(registrations / http_seconds, 1),
        "HTTP latency p50 (ms)": round(statistics.median(latencies) * 1000, 1),
        "HTTP latency p95 (ms)": round(_percentile(latencies, 0.95) * 1000, 1),
        "HTTP latency max (ms)": round(max(latencies) * 1000, 1),
        "seconds until every mail was accepted by SMTP": round(pipeline_seconds, 2),
        "end-to-end mails per second": round(registrations / pipeline_seconds, 1),
    }


def run_on_servers(root: Path, smtp: SmtpServer, args) -> dict:
    with (
        rabbitmq_vhost() as (amqp_url, _),
        postgres_database() as r,
        postgres_database() as n,
        postgres_database() as e,
    ):
        suite = Suite(
            root,
            broker_url=amqp_url,
            smtp_url=smtp.url,
            database_urls={"registration": r, "notification": n, "evaluation": e},
        )
        try:
            return measure(suite.start(), smtp, args.registrations, args.clients, args.capacity)
        finally:
            suite.stop()


def run_embedded(root: Path, smtp: SmtpServer, args) -> dict:
    suite = Suite(root, smtp_url=smtp.url)
    try:
        return measure(suite.start(), smtp, args.registrations, args.clients, args.capacity)
    finally:
        suite.stop()


def progress(line: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {line}", flush=True)


def registration_part(args) -> list[str]:
    from tests.bench.registration_rush import RegistrationRush, RushSettings

    problem = postgres_problem() or rabbitmq_problem()
    if problem:
        return [f"skipped: {problem}"]
    settings = RushSettings.quick() if args.quick else RushSettings()
    profile_prefix = Path(args.output).with_suffix("").absolute().as_posix() + "-profile"
    with tempfile.TemporaryDirectory() as tmp:
        return RegistrationRush(Path(tmp), Path(profile_prefix), settings, progress).run()


def mail_part(args) -> list[str]:
    lines = [
        f"settings: {args.registrations} registrations from {args.clients} Python threads (requests), "
        f"capacity {args.capacity}; every process of the suite"
    ]
    runs = [("embedded defaults (SQLite + embedded Redis)", run_embedded)]
    if postgres_problem() is None and rabbitmq_problem() is None:
        runs.insert(0, ("PostgreSQL + RabbitMQ", run_on_servers))
    else:
        lines.append(f"skipped PostgreSQL + RabbitMQ: {postgres_problem() or rabbitmq_problem()}")
    for title, run in runs:
        progress(f"mail pipeline on {title}: {args.registrations} registrations ...")
        with tempfile.TemporaryDirectory() as tmp, SmtpServer() as smtp:
            results = run(Path(tmp), smtp, args)
        lines.append(f"### {title}")
        lines += [f"{name}: {value}" for name, value in results.items()]
    return lines


def pipeline_part(args) -> list[str]:
    from tests.bench.pipeline_latency import PipelineBench

    profile_prefix = Path(args.output).with_suffix("").absolute().as_posix() + "-profile"
    return PipelineBench(args.quick, Path(profile_prefix), progress).run()


def fanout_part(args) -> list[str]:
    from tests.bench.announcement_fanout import FanoutBench

    profile_prefix = Path(args.output).with_suffix("").absolute().as_posix() + "-profile"
    with tempfile.TemporaryDirectory() as tmp:
        return FanoutBench(args.quick, Path(profile_prefix), progress).run(Path(tmp))


def results_part(args) -> list[str]:
    from tests.bench.round_results import measure as measure_round_results

    return measure_round_results(quick=args.quick, progress=progress)


PARTS = {
    "registration": ("Registration rush (wrk; PostgreSQL + RabbitMQ)", registration_part),
    "mail": ("Mail pipeline (registration -> outbox -> broker -> notification -> SMTP)", mail_part),
    "pipeline": ("Event -> mail latency (201 -> SMTP accept, steady rate; raw kombu beside it)", pipeline_part),
    "fanout": ("Announcement fan-out (10,000 and 20,000 recipients, two worker processes -> SMTP)", fanout_part),
    "results": ("Results of an evaluation round (scoring statistics, pure Python)", results_part),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="bench-results.txt")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="shorter runs, for a look rather than figures")
    parser.add_argument("--registrations", type=int, default=None, help="mail part (default 500, quick 200)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--capacity", type=int, default=200)
    args = parser.parse_args()
    if args.registrations is None:
        args.registrations = 200 if args.quick else 500
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s): {', '.join(unknown)}")

    started = time.perf_counter()
    lines = [
        f"# Labinov benchmark, {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"# machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, {_cpu_model()}, "
        f"python {platform.python_version()}",
        f"# command: python -m tests.bench.run {' '.join(sys.argv[1:])}".rstrip(),
        "# the cores are shared with every other process on the machine (test runs, editors): figures are noisy",
    ]
    failed = []
    for part in parts:
        title, measure_part = PARTS[part]
        progress(f"part: {title}")
        lines += ["", f"## {title}"]
        try:
            lines += measure_part(args)
        except Exception as exc:  # one broken part must not cost the figures of the others
            traceback.print_exc()
            failed.append(part)
            lines.append(f"FAILED: {type(exc).__name__}: {str(exc)[:2000]}")
        Path(args.output).write_text("\n".join(lines) + "\n")  # what is measured so far survives a later failure
    lines.append(f"\n# whole benchmark: {time.perf_counter() - started:.0f} s")
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    progress(f"written to {args.output}")
    if failed:
        sys.exit(f"part(s) failed: {', '.join(failed)} (see {args.output})")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu model unknown"


if __name__ == "__main__":
    main()
