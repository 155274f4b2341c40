"""The real servers tests run against, and what happens when one is missing.

On a laptop without PostgreSQL or RabbitMQ the tests that need them are skipped with the reason printed in
pytest's summary. Under CI (``CI=true``) or with ``LABINOV_REQUIRE_SERVERS=1`` a missing server fails
those tests instead: a green CI run must have exercised the real servers.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from contextlib import contextmanager
from functools import cache

import pytest

POSTGRES_ADMIN_URL = os.environ.get("LABINOV_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ_HOST = os.environ.get("LABINOV_TEST_RABBITMQ_HOST", "127.0.0.1")
RABBITMQ_PORT = int(os.environ.get("LABINOV_TEST_RABBITMQ_PORT", "5672"))


def servers_required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("LABINOV_REQUIRE_SERVERS") == "1"


def missing(reason: str):
    """Skip (laptop) or fail (CI) the current test because a server is missing."""
    if servers_required():
        pytest.fail(f"{reason} — CI needs this server (see .ci/run)", pytrace=False)
    pytest.skip(reason)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@cache
def postgres_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}"
    return None


@cache
def rabbitmq_problem() -> str | None:
    if not _port_open(RABBITMQ_HOST, RABBITMQ_PORT):
        return f"RabbitMQ is not listening on {RABBITMQ_HOST}:{RABBITMQ_PORT}"
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not on PATH (tests create a vhost of their own with it)"
    return None


@contextmanager
def postgres_database():
    """A fresh PostgreSQL database for one test; dropped afterwards. Yields its SQLAlchemy URL."""
    import psycopg

    problem = postgres_problem()
    if problem:
        missing(problem)
    name = f"labinov_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60).stdout


@contextmanager
def rabbitmq_vhost():
    """A fresh RabbitMQ vhost for one test; deleted afterwards. Yields ``(amqp url, vhost name)``."""
    problem = rabbitmq_problem()
    if problem:
        missing(problem)
    vhost = f"labinov-test-{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{vhost}", vhost
    finally:
        rabbitmqctl("delete_vhost", vhost)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(size: int = 4) -> int:
    """A base port such that base..base+size-1 are all free now (the suite uses LABINOV_PORT+1..3)."""
    for _ in range(200):
        base = free_port()
        if base + size < 65000 and all(_bindable(base + i) for i in range(size)):
            return base
    raise RuntimeError("no block of free ports")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
