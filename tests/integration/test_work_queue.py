"""The table-backed work queue (shared.workqueue) on the real PostgreSQL and on the embedded SQLite default.

A table of its own stands in for the outbox, the deliveries and every later sender: the queue is only
claims, leases and the token guard, so that is all these tests look at.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.orm import Session

from shared.clock import utcnow
from shared.db import create_database_engine
from shared.workqueue import WorkQueue

LEASE = timedelta(minutes=1)

metadata = MetaData()
jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("due_at", DateTime, nullable=False),
    Column("done_at", DateTime, nullable=True),
    Column("claim_token", String(64), nullable=True),
    Column("claimed_until", DateTime, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("note", String(200), nullable=True),
)


@pytest.fixture
def engine(database_url, tmp_path):
    engine = create_database_engine(database_url or f"sqlite:///{tmp_path / 'queue.db'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def queue_on(engine, lease: timedelta = LEASE) -> WorkQueue:
    return WorkQueue(engine, jobs, pending=(jobs.c.done_at.is_(None),), due_at=jobs.c.due_at, lease=lease)


def add_jobs(engine, count: int, due_at: datetime | None = None) -> list[int]:
    with engine.begin() as connection:
        connection.execute(
            insert(jobs), [{"id": i, "due_at": due_at or utcnow(), "attempts": 0} for i in range(1, count + 1)]
        )
    return list(range(1, count + 1))


def job(engine, job_id: int):
    with engine.connect() as connection:
        return connection.execute(select(jobs).where(jobs.c.id == job_id)).one()


def leases_run_out(engine) -> None:
    """Time passes: every lease held now has expired."""
    with engine.begin() as connection:
        connection.execute(update(jobs).values(claimed_until=utcnow() - timedelta(seconds=1)))


# --- claiming ---------------------------------------------------------------------------------------------


def test_a_claim_takes_due_rows_in_order_up_to_the_batch_size(engine):
    add_jobs(engine, 5)
    with engine.begin() as connection:
        connection.execute(update(jobs).where(jobs.c.id == 2).values(due_at=utcnow() + timedelta(hours=1)))
        connection.execute(update(jobs).where(jobs.c.id == 4).values(done_at=utcnow()))

    token, rows = queue_on(engine).claim(2)

    assert [row.id for row in rows] == [1, 3]
    assert all(row.claim_token == token and row.claimed_until > utcnow() for row in rows)
    assert [row.id for row in queue_on(engine).claim(10).rows] == [5]  # not due, done or leased: left alone


def test_a_claim_takes_rows_in_the_queues_order(engine):
    add_jobs(engine, 3)
    with engine.begin() as connection:
        for job_id, minutes_late in [(1, 1), (2, 3), (3, 2)]:
            connection.execute(
                update(jobs).where(jobs.c.id == job_id).values(due_at=utcnow() - timedelta(minutes=minutes_late))
            )
    longest_due_first = WorkQueue(
        engine, jobs, pending=(jobs.c.done_at.is_(None),), due_at=jobs.c.due_at, order_by=(jobs.c.due_at,), lease=LEASE
    )
    assert [row.id for row in longest_due_first.claim(10).rows] == [2, 3, 1]


def test_workers_claiming_at_the_same_moment_get_disjoint_rows_and_together_all_of_them(engine):
    ids = add_jobs(engine, 120)
    queue = queue_on(engine)
    workers = 4
    start = threading.Barrier(workers)
    taken: list[list[int]] = [[] for _ in range(workers)]

    def work(mine: list[int]) -> None:
        start.wait(10)
        while True:
            token, rows = queue.claim(7)
            if not rows:
                return
            mine.extend(row.id for row in rows)
            time.sleep(0.01)  # the work itself, while the rows are held
            assert queue.finish(token, [row.id for row in rows], done_at=utcnow()) == len(rows)

    threads = [threading.Thread(target=work, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    every_claim = [job_id for mine in taken for job_id in mine]
    assert sorted(every_claim) == ids, "a row was claimed twice, or never"
    assert sum(1 for mine in taken if mine) > 1, f"only one worker got work: {[len(m) for m in taken]}"


def test_on_postgresql_a_claim_skips_rows_another_transaction_holds_without_waiting_for_it(postgres_url):
    # PostgreSQL only: SQLite has one writer at a time, so there is no row lock to skip
    engine = create_database_engine(postgres_url)
    metadata.create_all(engine)
    add_jobs(engine, 6)
    claimed: list = []
    try:
        with engine.connect() as other_worker:
            with other_worker.begin():  # another worker is in the middle of claiming rows 1-3
                other_worker.execute(text("SELECT id FROM jobs WHERE id <= 3 FOR UPDATE"))
                claimer = threading.Thread(target=lambda: claimed.append(queue_on(engine).claim(10)))
                claimer.start()
                claimer.join(5)
                assert not claimer.is_alive(), "the claim waited for the other transaction's locks"
    finally:
        engine.dispose()
    [(_token, rows)] = claimed
    assert [row.id for row in rows] == [4, 5, 6]


def test_a_claim_writes_the_callers_values_with_the_lease_on_the_rows_it_took_and_returns_them_written(engine):
    add_jobs(engine, 4)
    with engine.begin() as connection:
        connection.execute(update(jobs).where(jobs.c.id == 3).values(done_at=utcnow()))

    token, rows = queue_on(engine).claim(2, note="in hand")

    assert [(row.id, row.note, row.claim_token) for row in rows] == [(1, "in hand", token), (2, "in hand", token)]
    assert [job(engine, i).note for i in (1, 2, 3, 4)] == ["in hand", "in hand", None, None]


# --- leases -----------------------------------------------------------------------------------------------


def test_a_leased_row_is_not_claimed_again_until_its_lease_runs_out(engine):
    add_jobs(engine, 1)
    queue = queue_on(engine)
    first, _ = queue.claim(10)

    assert queue.claim(10).rows == []
    leases_run_out(engine)
    second, [row] = queue.claim(10)

    assert second != first and row.claim_token == second


def test_renewing_a_lease_keeps_the_row_from_other_workers(engine):
    add_jobs(engine, 1)
    queue = queue_on(engine, lease=timedelta(seconds=5))
    token, [row] = queue.claim(10)
    leases_run_out(engine)

    assert queue.renew(token, row.id)

    assert job(engine, row.id).claimed_until > utcnow()
    assert queue.claim(10).rows == []


# --- the token guard --------------------------------------------------------------------------------------


def test_a_stale_token_cannot_finish_postpone_renew_or_release_a_row_another_worker_now_holds(engine):
    add_jobs(engine, 2)
    queue = queue_on(engine)
    stale, _ = queue.claim(10)
    leases_run_out(engine)
    current, rows = queue.claim(10)
    ids = [row.id for row in rows]

    assert queue.finish(stale, ids, done_at=utcnow()) == 0
    assert queue.postpone(stale, 1, utcnow() + timedelta(hours=1), attempts=5) is False
    assert queue.renew(stale, 1) is False
    assert queue.release(stale, ids) == 0
    with engine.begin() as connection:
        assert connection.execute(queue.guarded(stale, ids).values(note="stale")).rowcount == 0

    for job_id in ids:
        row = job(engine, job_id)
        assert (row.claim_token, row.done_at, row.attempts, row.note) == (current, None, 0, None)
    assert queue.finish(current, ids, done_at=utcnow()) == 2


def test_a_finished_row_is_neither_claimed_nor_changed_again(engine):
    add_jobs(engine, 1)
    queue = queue_on(engine)
    token, _ = queue.claim(10)
    assert queue.finish(token, [1], done_at=utcnow(), note="done") == 1
    leases_run_out(engine)

    assert queue.claim(10).rows == []
    assert queue.renew(token, 1) is False
    assert queue.postpone(token, 1, utcnow()) is False
    assert queue.finish(token, [1], note="twice") == 0
    assert job(engine, 1).note == "done"


# --- giving rows back -------------------------------------------------------------------------------------


def test_a_postponed_row_is_due_again_at_the_time_given_with_the_values_written(engine):
    add_jobs(engine, 1)
    queue = queue_on(engine)
    token, _ = queue.claim(10)
    later = datetime.now(UTC) + timedelta(minutes=5)  # aware times are stored as naive UTC

    assert queue.postpone(token, 1, later, attempts=1, note="refused")

    row = job(engine, 1)
    assert (row.claim_token, row.claimed_until, row.attempts, row.note) == (None, None, 1, "refused")
    assert row.due_at == later.replace(tzinfo=None)
    assert queue.claim(10).rows == []
    with engine.begin() as connection:  # time passes
        connection.execute(update(jobs).values(due_at=utcnow()))
    assert [row.id for row in queue.claim(10).rows] == [1]


def test_released_rows_are_claimable_again_at_once(engine):
    add_jobs(engine, 3)
    queue = queue_on(engine)
    token, _ = queue.claim(10)

    assert queue.release(token, [2, 3]) == 2
    assert queue.release(token, []) == 0

    assert [row.id for row in queue.claim(10).rows] == [2, 3]


def test_finishing_on_the_callers_transaction_commits_or_rolls_back_with_it(engine):
    add_jobs(engine, 2)
    queue = queue_on(engine)
    token, _ = queue.claim(10)

    with pytest.raises(RuntimeError), engine.begin() as connection:
        assert queue.finish(token, [1], on=connection, done_at=utcnow()) == 1
        raise RuntimeError("what the outcome writes failed")
    assert job(engine, 1).done_at is None

    with Session(engine) as database_session:
        assert queue.finish(token, [1, 2], on=database_session, done_at=utcnow()) == 2
        database_session.commit()
    assert job(engine, 1).done_at is not None and job(engine, 2).done_at is not None
