"""`make bench`: measured figures of the suite's real processes, written to a file.

Starts the suite (gunicorn web processes + workers) on the real PostgreSQL and RabbitMQ when they are
reachable, else on the embedded defaults, then measures:

* a registration rush: N registrations for one session from C concurrent clients through HTTP —
  throughput and latency percentiles, and that confirmed == capacity;
* the event pipeline: time from the first registration until every confirmation mail reached a real SMTP
  server (aiosmtpd), i.e. registration → outbox → relay → broker → consumer → mail.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="bench-results.txt")
    parser.add_argument("--registrations", type=int, default=500)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--capacity", type=int, default=200)
    args = parser.parse_args()

    lines = [
        f"# Labinov benchmark, {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"# machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "# command: make bench",
    ]
    runs = [("embedded defaults (SQLite + embedded Redis)", run_embedded)]
    if postgres_problem() is None and rabbitmq_problem() is None:
        runs.insert(0, ("PostgreSQL + RabbitMQ", run_on_servers))
    else:
        lines.append(f"# skipped PostgreSQL + RabbitMQ: {postgres_problem() or rabbitmq_problem()}")
    for title, run in runs:
        with tempfile.TemporaryDirectory() as tmp, SmtpServer() as smtp:
            results = run(Path(tmp), smtp, args)
        lines.append(f"\n## {title}")
        lines += [f"{name}: {value}" for name, value in results.items()]
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
