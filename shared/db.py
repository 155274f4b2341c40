"""Database access shared by the services: engines, the unit of work, and migrations.

Every service has its own database (SQLite file by default, PostgreSQL in production) and reaches it only
through the helpers here, so that both engines behave alike where correctness depends on it:

* **SQLite** serialises writers. Each transaction that may write starts with ``BEGIN IMMEDIATE`` (the
  recipe from the SQLAlchemy docs for pysqlite), so a read-then-write transaction such as "count seats,
  then insert" holds the write lock from its first statement and two of them can never interleave;
  ``busy_timeout`` makes a waiting writer queue rather than fail. Transactions that only read (on
  :func:`reading_engine`, e.g. ``runtime.reading()``) start with a plain ``BEGIN`` and, thanks to WAL
  mode, never wait for a writer.
* **PostgreSQL** runs READ COMMITTED; a domain operation that needs mutual exclusion says so explicitly
  with ``SELECT ... FOR UPDATE`` on the row that guards the invariant (documented where it is used).
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Delete,
    Engine,
    Insert,
    Table,
    Update,
    bindparam,
    create_engine,
    event,
    insert,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from shared.events import make_event
from shared.messaging import wakeup
from shared.messaging.tables import outbox_row
from shared.messaging.topology import EVENTS_EXCHANGE
from shared.observability import current_correlation_id


def new_id() -> str:
    """A new random primary key (UUID4 text), the same on SQLite and PostgreSQL."""
    return str(uuid.uuid4())


def create_database_engine(url: str, *, wait_for_disk: bool = True, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the settings Labinov relies on (see the module docstring).

    ``wait_for_disk=False`` makes an engine whose commits return before they are on disk — PostgreSQL's
    ``synchronous_commit = off``, SQLite's ``synchronous = NORMAL`` in WAL mode — still atomic, isolated and at
    once visible to everyone, but lost if the machine or the database server crashes within a moment. Only for
    writers whose lost commit the design absorbs (the outbox relay's claims and marks: see
    :mod:`shared.messaging.outbox`); everything else waits for the disk."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):  # pragma: no cover - exercised by every SQLite test
            dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" event emit BEGIN itself
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            if not wait_for_disk:
                cursor.execute("PRAGMA synchronous=NORMAL")  # per connection: WAL commits not fsynced
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection):
            reading = connection.get_execution_options().get(READ_ONLY_OPTION)
            connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 5)
    if not wait_for_disk:
        kwargs["connect_args"] = {**kwargs.get("connect_args", {}), "options": "-c synchronous_commit=off"}
    return create_engine(url, **kwargs)


READ_ONLY_OPTION = "labinov_read_only"


def reading_engine(engine: Engine) -> Engine:
    """The same engine and pool, for transactions that only read (see the module docstring)."""
    return engine.execution_options(**{READ_ONLY_OPTION: True})


def insert_or_update(session: Session, table: Table):
    """An ``INSERT`` for ``table`` that supports ``.on_conflict_do_update()`` on PostgreSQL and SQLite alike."""
    insert_for = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    return insert_for(table)


def upsert(session: Session, table: Table, values: dict[str, Any], key: tuple[str, ...]) -> None:
    """Insert ``values`` or, if a row with the same ``key`` columns exists, update it — in one statement, so
    two workers projecting events about the same thing never collide (PostgreSQL and SQLite alike).

    The statement is made once per table, dialect, columns and key (a projection runs it for every event it
    hears; building and hashing a new statement each time cost more CPU than the database did)."""
    statement = _upsert_statement(session.get_bind().dialect.name, table, tuple(values), tuple(key))
    session.execute(statement, {f"upsert_{name}": value for name, value in values.items()})


@functools.lru_cache(maxsize=256)  # a handful of projections, each with its one set of columns
def _upsert_statement(dialect: str, table: Table, columns: tuple[str, ...], key: tuple[str, ...]) -> Insert:
    insert_for = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = insert_for(table).values(
        {name: bindparam(f"upsert_{name}", type_=table.c[name].type) for name in columns}
    )
    changes = {name: statement.excluded[name] for name in columns if name not in key}
    return statement.on_conflict_do_update(index_elements=list(key), set_=changes)


#: One write of a hot path: a statement made once with named bind parameters, and this call's values.
Write = tuple[Insert | Update | Delete, dict[str, Any]]


def execute_together(session: Session, *writes: Write) -> None:
    """Run ``writes`` in the session's transaction, in one round trip where the database allows it — for the
    writes a hot path makes while it holds a lock.

    Each write is a statement template (made once, at import, with :func:`~sqlalchemy.bindparam` values named
    apart from every other template's) and its values, so no statement is built or compiled per call.
    On PostgreSQL the templates are sent as one statement: all but the last become data-modifying CTEs of the
    last (``WITH w0 AS (UPDATE …), w1 AS (INSERT …) INSERT …``), combined once per set of templates.
    PostgreSQL runs every part against one snapshot and in no set order, so the writes must not depend on each
    other's effects (new rows and rows the caller holds locked do not; constraints still hold, and any failure
    fails them all). SQLite is in-process, so there they simply run one after another.
    """
    if session.get_bind().dialect.name != "postgresql" or len(writes) == 1:
        for statement, own_values in writes:
            session.execute(statement, own_values)
        return
    values: dict[str, Any] = {}
    for _statement, own_values in writes:
        values.update(own_values)
    session.execute(_combined(tuple(statement for statement, _own_values in writes)), values)


@functools.lru_cache(maxsize=128)  # templates are made once, so a handful of combinations ever occur
def _combined(statements: tuple[Insert | Update | Delete, ...]) -> Insert | Update | Delete:
    *first, last = statements
    return last.add_cte(*(statement.cte(f"w{index}") for index, statement in enumerate(first)))


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


class UnitOfWork:
    """One database transaction and the events it causes, committed together or not at all.

    ``with uow:`` opens a database session (``uow.session``); :meth:`publish` validates an event against the
    catalogue and adds its outbox row to the same transaction; :meth:`commit` commits both. Leaving the block
    without committing rolls everything back — a state change without its events (or the reverse) can never
    be written.

    **Who commits.** Whoever opens a unit of work commits it — a view, a command, the event processor, a
    worker loop. Domain operations that receive a ``uow`` only add to it (they may flush) and never commit,
    so a handler's effects and its inbox row commit together. An operation that needs several transactions
    of its own (signing in, sending mail) takes the runtime / a unit-of-work factory instead and commits
    each one itself.

    **Wake-ups** (:mod:`shared.messaging.wakeup`). A transaction that writes an outbox row rings the
    service's outbox channel, so a relay publishes it at once instead of at its next poll; any other queue's
    writer asks for the same with :meth:`notify_after_commit`. On PostgreSQL the ring is ``pg_notify`` in
    the transaction, delivered by the commit: for the outbox it is the ``RETURNING`` of the outbox row's own
    ``INSERT``, so a hot path that holds a lock (registering, :func:`execute_together`) gains no round trip.
    On SQLite :meth:`commit` rings after the commit succeeded. A rolled-back transaction rings nothing.
    """

    def __init__(self, session_factory: sessionmaker, outbox: Table, source: str) -> None:
        self._session_factory = session_factory
        self._outbox = outbox
        self.source = source
        self._session: Session | None = None
        self._service = source.strip("/")
        bind = session_factory.kw.get("bind")
        self._engine: Engine | None = bind if isinstance(bind, Engine) else None
        self._notifies_in_transaction = self._engine is not None and is_postgresql(self._engine)
        self._outbox_channel = wakeup.channel(self._service, wakeup.OUTBOX)
        self._rings: set[str] = set()  # channels to ring after commit (SQLite) or already rung (PostgreSQL)

    @property
    def session(self) -> Session:
        """This transaction's database session (only inside the ``with`` block)."""
        if self._session is None:
            raise RuntimeError("use the unit of work inside a with-block")
        return self._session

    def __enter__(self) -> UnitOfWork:
        self._session = self._session_factory()
        self._rings = set()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        # close() rolls back whatever was not committed; unlike rollback() it keeps the loaded state of
        # committed objects readable, so a view can render what the operation returned.
        self.session.close()

    def publish(self, event_type: str, data: dict[str, Any], subject: str | None = None) -> dict[str, Any]:
        """Add event ``event_type`` to this transaction's outbox; it reaches the broker after commit."""
        envelope, (statement, values) = self.event_write(event_type, data, subject)
        self.session.execute(statement, values)
        return envelope

    def event_write(
        self, event_type: str, data: dict[str, Any], subject: str | None = None
    ) -> tuple[dict[str, Any], Write]:
        """The validated envelope of a new event and the outbox write that publishes it, for a caller that
        writes it together with its other changes (:func:`execute_together`); :meth:`publish` runs it at once."""
        envelope = make_event(
            event_type,
            data,
            source=self.source,
            correlation_id=current_correlation_id(),
            subject=subject,
        )
        row = outbox_row(envelope, EVENTS_EXCHANGE.name, event_type, {}, None)
        write = (self._outbox_write(), {f"outbox_{name}": value for name, value in row.items()})
        return envelope, write

    def enqueue(
        self,
        envelope: dict[str, Any],
        *,
        exchange: str,
        routing_key: str,
        headers: dict[str, Any] | None = None,
        not_before: datetime | None = None,
    ) -> None:
        """Write a raw outbox row (events, retries and dead letters all leave through the outbox)."""
        row = outbox_row(envelope, exchange, routing_key, headers or {}, not_before)
        self.session.execute(self._outbox_write(), {f"outbox_{name}": value for name, value in row.items()})

    def notify_after_commit(self, queue: str) -> None:
        """Wake the loops of this service's ``queue`` (e.g. :data:`~shared.messaging.wakeup.DELIVERIES`) once
        this transaction commits — for a writer of a work-queue row other than the outbox. Once per
        transaction and channel, however often it is called. On PostgreSQL it is one ``pg_notify`` statement
        now (PostgreSQL sends it at commit), so call it where no lock is held, or beside the last write."""
        channel = wakeup.channel(self._service, queue)
        if channel in self._rings:
            return
        self._rings.add(channel)
        if self._notifies_in_transaction:
            self.session.execute(select(literal_column(wakeup.notify_statement(channel))))

    def commit(self) -> None:
        self.session.commit()
        rings, self._rings = self._rings, set()
        if rings and not self._notifies_in_transaction and self._engine is not None:
            for channel in rings:
                wakeup.ring(self._engine, channel)

    def _outbox_write(self) -> Insert:
        """The outbox insert, noting that this transaction rings the outbox channel (on PostgreSQL the insert
        rings it itself)."""
        self._rings.add(self._outbox_channel)
        return _outbox_insert(self._outbox, self._outbox_channel if self._notifies_in_transaction else None)

    def flush(self) -> None:
        self.session.flush()


@functools.cache
def _outbox_insert(outbox: Table, notify_channel: str | None) -> Insert:
    """The outbox row insert, made once per table, its values named ``outbox_<column>``; with
    ``notify_channel`` (PostgreSQL) it rings that channel in its ``RETURNING``, so the wake-up costs no
    statement of its own — also as a CTE of :func:`execute_together`, since PostgreSQL runs every
    data-modifying CTE to completion, ``RETURNING`` included, read or not. PostgreSQL folds the rings of
    one transaction into one notification."""
    columns = [column.key for column in outbox.columns if column.key in _OUTBOX_ROW_COLUMNS]
    statement = insert(outbox).values({name: bindparam(f"outbox_{name}") for name in columns})
    if notify_channel is None:
        return statement
    return statement.returning(literal_column(wakeup.notify_statement(notify_channel)).label("rung"))


_OUTBOX_ROW_COLUMNS = frozenset(outbox_row({}, "", "", {}, None))


def ping(engine: Engine) -> None:
    """Raise if the database does not answer; used by the readiness check."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
