"""Event handlers of the evaluation service: thin adapters from events to domain operations.

Registration's events keep the ``registrations`` projection (who may write proposals) and the participant
list; ``account.*`` keep the evaluators (with their OPD). Each event carries the full state it reports."""

from __future__ import annotations

from services.evaluation import domain
from shared.db import UnitOfWork
from shared.events import Event
from shared.messaging.consumer import Handler


def on_registration_confirmed(uow: UnitOfWork, event: Event) -> None:
    domain.record_registration(uow, event.data, "confirmed")


def on_registration_cancelled(uow: UnitOfWork, event: Event) -> None:
    domain.record_registration(uow, event.data, "cancelled")


def on_account(uow: UnitOfWork, event: Event) -> None:
    domain.record_account(uow, event.data)


HANDLERS: dict[str, Handler] = {
    "registration.confirmed": on_registration_confirmed,
    "registration.promoted": on_registration_confirmed,  # a promoted registration is a confirmed one
    "registration.cancelled": on_registration_cancelled,
    "account.created": on_account,
    "account.changed": on_account,
}
