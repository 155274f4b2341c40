"""Wake-ups: a transaction that queued work wakes the loops that do it, instead of leaving them to their poll.

The outbox relay and the mail sender work off tables (:mod:`shared.workqueue`). Polling alone puts their
poll interval into every event's latency, idle or not; a wake-up removes it. The mechanism is the same for
every queue and every database: a **channel** per (service, queue) — ``labinov_outbox_registration``,
``labinov_deliveries_notification`` — which a transaction that wrote a row of that queue *rings*, and on
which each loop of that queue *listens* between its claims. Two transports, chosen by the database the
queue lives in, because whoever can see the queue's rows can be woken through it:

* **PostgreSQL: ``LISTEN``/``NOTIFY``.** The writing transaction calls ``pg_notify(channel, '')`` — for the
  outbox inside the outbox row's own ``INSERT`` (``RETURNING pg_notify(…)``, see :mod:`shared.db`), so the
  hot path gains no round trip. PostgreSQL delivers a notification only when (and if) its transaction
  commits, once per channel per transaction, to every session listening on that database. Each loop holds
  one dedicated autocommit psycopg connection that ``LISTEN``\\ s (:class:`PostgresListener`).
* **SQLite: a datagram after commit.** SQLite has no notifications, and its writers are every process of a
  data folder (web processes, workers). Each listening loop binds a Unix datagram socket in a folder named
  after the database file and the channel (:func:`socket_folder`, under the temporary directory, private
  to the user: a socket path must stay under 108 bytes); :meth:`shared.db.UnitOfWork.commit` sends one
  byte to every socket in it after the commit succeeded (:func:`ring`) — a ``scandir`` and a non-blocking
  ``sendto`` per listener, some microseconds. A socket whose process died refuses the datagram and is
  removed. A database in memory has no file to meet at: its listeners are woken inside the process only.

**Polling stays, as the safety net.** A wake-up is a hint, never the work itself: the work is the committed
row. A lost hint — the listener was reconnecting, the process ringing died between commit and ring, the
socket buffer was full, a retry row came due later — only delays the row until the loop's next poll
(``LABINOV_RELAY_POLL_MS``, ``LABINOV_MAIL_POLL_MS``). Nothing is ever lost through this module.

**Several loops** (scaled-out workers) all listen on the channel and all wake; the work queue's claims
(``FOR UPDATE SKIP LOCKED``, the claim token) keep what they take disjoint, so waking them all costs one
empty claim each at worst.

**No missed ring between a claim and the wait:** a loop starts listening *before* its first claim; a ring
that arrives while it is claiming is kept (by PostgreSQL on the connection, by the kernel in the socket's
buffer), so the following :meth:`Listener.wait` returns at once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import select
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Engine

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

#: The queue names of the channels in use: a service's outbox, and notification's deliveries.
OUTBOX = "outbox"
DELIVERIES = "deliveries"

#: Longest single wait, so that a loop sees its stop event (and the relay answers AMQP heartbeats) in time.
WAIT_SLICE = 0.5


def channel(service: str, queue: str) -> str:
    """The channel a transaction of ``service`` rings when it writes a row of ``queue``."""
    return f"labinov_{queue}_{service}"


class Listener(Protocol):
    """One loop's end of a channel."""

    def wait(self, timeout: float) -> bool:
        """Block until rung (``True``, every ring since the last wait consumed) or ``timeout`` seconds."""
        ...

    def close(self) -> None: ...


def listen(engine: Engine, channel_name: str) -> Listener:
    """Start listening on ``channel_name`` for the queue in ``engine``'s database (see the module docstring)."""
    if engine.dialect.name == "postgresql":
        return PostgresListener(engine, channel_name)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return SocketListener(socket_folder(database, channel_name))
    return LocalListener(channel_name)


def wait_for_work(
    listener: Listener, stop: threading.Event, timeout: float, between: Callable[[], None] | None = None
) -> bool:
    """Wait until rung, ``stop`` is set or ``timeout`` (the poll interval) has passed; ``True`` if rung.

    Waits in slices of at most :data:`WAIT_SLICE`, calling ``between()`` after each (the relay answers its
    broker's heartbeats there), so a loop with a poll of minutes still stops at once."""
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if listener.wait(min(remaining, WAIT_SLICE)):
            return True
        if between is not None:
            between()
    return False


# -- PostgreSQL: LISTEN/NOTIFY -------------------------------------------------------------------------------


def notify_statement(channel_name: str) -> str:
    """The SQL expression that rings ``channel_name`` when the transaction commits (PostgreSQL)."""
    if not channel_name.replace("_", "").isalnum():
        raise ValueError(f"not a channel name: {channel_name!r}")
    return f"pg_notify('{channel_name}', '')"


class PostgresListener:
    """``LISTEN`` on a dedicated autocommit connection of the queue's database.

    The connection is the listener's own, never one of the engine's pool: a pooled connection is reset
    (and its ``LISTEN`` dropped) when it goes back. If it breaks (a database restart), :meth:`wait` sleeps
    out its timeout and reconnects on the next call — and then reports a wake-up, because rings may have
    been missed meanwhile.
    """

    def __init__(self, engine: Engine, channel_name: str) -> None:
        notify_statement(channel_name)  # checks the name: it is written into SQL below
        self.channel = channel_name
        self._url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._connection: psycopg.Connection | None = None
        self._connect()

    def _connect(self) -> None:
        import psycopg

        connection = psycopg.connect(self._url, autocommit=True, connect_timeout=5)
        connection.execute(f'LISTEN "{self.channel}"')
        self._connection = connection

    def wait(self, timeout: float) -> bool:
        if self._connection is None:
            try:
                self._connect()
            except Exception as exc:
                log.warning("wake-ups on %s unavailable (%r): polling only", self.channel, exc)
                time.sleep(timeout)
                return False
            return True
        try:
            if not any(True for _ in self._connection.notifies(timeout=timeout, stop_after=1)):
                return False
            self._drain()
            return True
        except Exception as exc:  # the connection broke: rows still wait, the poll finds them
            log.warning("wake-ups on %s lost (%r): reconnecting", self.channel, exc)
            self.close()
            return False

    def _drain(self) -> None:
        """Read every notification that has reached the socket: together they are this one wake-up. (One
        still on its way is a spurious wake-up later: one empty claim.)"""
        assert self._connection is not None
        pgconn = self._connection.pgconn
        pgconn.consume_input()
        while pgconn.notifies() is not None:
            pass

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None


# -- SQLite: a datagram to each listener's socket ------------------------------------------------------------


@functools.lru_cache(maxsize=256)  # a handful of (database, channel) pairs per process, rung on every commit
def socket_folder(database_path: str, channel_name: str) -> Path:
    """Where the listeners of ``channel_name`` on the SQLite file ``database_path`` bind their sockets.

    Named by a hash of the file's real path and the channel, so every process that opens the same file —
    whatever its working directory — meets in the same folder, and the socket paths stay short."""
    real = os.path.realpath(database_path)
    digest = hashlib.sha256(f"{real}\0{channel_name}".encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"labinov-wakeups-{os.getuid()}" / digest


def _private_folder(folder: Path) -> bool:
    """Create ``folder`` (and its parent) private to this user; ``False`` if someone else owns either."""
    for path in (folder.parent, folder):
        try:
            path.mkdir(mode=0o700, exist_ok=True)
            info = path.lstat()
        except OSError:
            return False
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return False
    return True


class SocketListener:
    """A Unix datagram socket in the channel's folder; any datagram is a ring."""

    _sequence = 0
    _sequence_lock = threading.Lock()

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._socket: socket.socket | None = None
        if not _private_folder(folder):
            log.warning("wake-ups unavailable: %s is not a private folder of this user; polling only", folder)
            return
        with SocketListener._sequence_lock:
            SocketListener._sequence += 1
            sequence = SocketListener._sequence
        self.path = folder / f"{os.getpid()}-{sequence}"
        self.path.unlink(missing_ok=True)
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listening.bind(str(self.path))
        listening.setblocking(False)
        self._socket = listening

    def wait(self, timeout: float) -> bool:
        if self._socket is None:
            time.sleep(timeout)
            return False
        readable, _, _ = select.select([self._socket], [], [], timeout)
        if not readable:
            return False
        while True:  # every ring so far is one wake-up
            try:
                self._socket.recv(64)
            except BlockingIOError:
                return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            self.path.unlink(missing_ok=True)


def ring_sockets(folder: Path) -> None:
    """Send one byte to every listener in ``folder``; remove the sockets of listeners that are gone."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return  # nobody has listened yet: nobody to wake
    if not entries:
        return
    sender = _sender()
    for entry in entries:
        try:
            sender.sendto(b"!", entry.path)
        except BlockingIOError:
            pass  # its buffer is full of rings it has not read yet: it is awake already
        except (ConnectionRefusedError, FileNotFoundError):
            Path(entry.path).unlink(missing_ok=True)  # its process died without closing it
        except OSError as exc:
            log.debug("ring to %s failed: %r", entry.path, exc)


_senders = threading.local()


def _sender() -> socket.socket:
    """This thread's non-blocking datagram socket for ringing (made once: a socket per ring would cost more
    than the ring)."""
    sender = getattr(_senders, "socket", None)
    if sender is None:
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.setblocking(False)
        _senders.socket = sender
    return sender


# -- in this process only (a database in memory) ------------------------------------------------------------


class LocalListener:
    """Woken by rings from this process only: for databases that no other process can open."""

    _listeners: dict[str, set[LocalListener]] = {}
    _lock = threading.Lock()

    def __init__(self, channel_name: str) -> None:
        self.channel = channel_name
        self._rung = threading.Event()
        with LocalListener._lock:
            LocalListener._listeners.setdefault(channel_name, set()).add(self)

    def wait(self, timeout: float) -> bool:
        if not self._rung.wait(timeout):
            return False
        # cleared before the caller claims: a ring after this finds it unset again, and a ring before it
        # was for a row committed before it, which that claim sees
        self._rung.clear()
        return True

    def close(self) -> None:
        with LocalListener._lock:
            LocalListener._listeners.get(self.channel, set()).discard(self)

    @classmethod
    def ring(cls, channel_name: str) -> None:
        with cls._lock:
            listeners = list(cls._listeners.get(channel_name, ()))
        for listener in listeners:
            listener._rung.set()


def ring(engine: Engine, channel_name: str) -> None:
    """Wake the listeners of ``channel_name`` after a commit on a database without notifications (SQLite).

    On PostgreSQL the transaction itself rang (``pg_notify``), so this does nothing there."""
    if engine.dialect.name == "postgresql":
        return
    database = engine.url.database
    if database and database != ":memory:":
        ring_sockets(socket_folder(database, channel_name))
    else:
        LocalListener.ring(channel_name)
