"""What must hold for a session's seats after any sequence of registrations, cancellations and moves —
checked by queries over the tables (rows, counters and outbox), not by what the answers said."""

from __future__ import annotations

import json
from collections import Counter

from sqlalchemy import select

from services.registration.tables import LabSession, OpdSeats, Programme, Registration
from shared.runtime import ServiceRuntime


def seat_problems(runtime: ServiceRuntime, session_id: str) -> list[str]:
    """Every way the session's stored state breaks an invariant (an empty list when all hold)."""
    problems: list[str] = []
    with runtime.reading() as uow:
        lab_session = uow.session.get(LabSession, session_id)
        programme = uow.session.get(Programme, lab_session.programme_id) if lab_session.programme_id else None
        rows = list(uow.session.scalars(select(Registration).where(Registration.session_id == session_id)))
        opd_counters = dict(
            uow.session.execute(select(OpdSeats.opd, OpdSeats.confirmed).where(OpdSeats.session_id == session_id))
            .tuples()
            .all()
        )
        events = [
            json.loads(payload)
            for (payload,) in uow.session.execute(
                select(runtime.outbox.c.payload)
                .where(runtime.outbox.c.event_type.like("registration.%"))
                .order_by(runtime.outbox.c.id)
            )
        ]
    confirmed = [r for r in rows if r.status == "confirmed"]
    waiting = sorted((r for r in rows if r.status == "waitlisted"), key=lambda r: r.waitlist_sequence)
    if len(confirmed) > lab_session.capacity:
        problems.append(f"{len(confirmed)} confirmed for {lab_session.capacity} seats")
    if len(confirmed) != lab_session.confirmed_count:
        problems.append(f"confirmed_count {lab_session.confirmed_count} but {len(confirmed)} rows")
    if len(waiting) != lab_session.waitlisted_count:
        problems.append(f"waitlisted_count {lab_session.waitlisted_count} but {len(waiting)} rows")
    sequences = [r.waitlist_sequence for r in rows if r.waitlist_sequence is not None]
    if len(set(sequences)) != len(sequences) or any(s > lab_session.waitlist_sequence for s in sequences):
        problems.append("waiting-list sequence numbers repeat or run past the session's counter")
    if any(r.waitlist_sequence is None for r in waiting):
        problems.append("a waiting registration has no place in the order")
    if programme is not None and programme.opd_quota is not None:
        per_opd = Counter(r.opd for r in confirmed)
        over = {opd: n for opd, n in per_opd.items() if n > programme.opd_quota}
        if over:
            problems.append(f"agencies over their quota of {programme.opd_quota}: {over}")
        if {opd: n for opd, n in opd_counters.items() if n} != dict(per_opd):
            problems.append(f"OPD counters {opd_counters} but rows {dict(per_opd)}")
    last_event = {}
    promoted = Counter()
    for event in events:
        if event["data"]["session_id"] == session_id or event["subject"] in last_event:
            last_event[event["subject"]] = event
        if event["type"] == "registration.promoted":
            promoted[event["subject"]] += 1
    for registration in rows:
        event = last_event.get(registration.id)
        if event is None or event["data"]["status"] != registration.status:
            problems.append(
                f"registration {registration.id} is {registration.status}; its last event says "
                f"{event and event['data']['status']}"
            )
        if event is not None and event["data"]["session_id"] != registration.session_id:
            problems.append(f"registration {registration.id}'s last event is about another session")
    for registration in confirmed:
        if registration.waitlist_sequence is not None and not promoted[registration.id]:
            problems.append(f"registration {registration.id} was promoted without registration.promoted")
    return problems


def waiting_places(runtime: ServiceRuntime, session_id: str) -> list[int]:
    """The places the API shows for the session's waiting registrations, in order."""
    from services.registration import domain

    with runtime.reading() as uow:
        return [
            place
            for _registration, place in domain.list_registrations(uow, session_id, status="waitlisted", limit=100_000)
        ]
