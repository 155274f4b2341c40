"""Event handlers of the evaluation service: thin adapters from events to domain operations."""

from __future__ import annotations

from services.evaluation import domain
from shared.db import UnitOfWork
from shared.events import Event
from shared.messaging.consumer import Handler


def on_registration_confirmed(uow: UnitOfWork, event: Event) -> None:
    domain.record_participant(uow, event.data)


HANDLERS: dict[str, Handler] = {
    "registration.confirmed": on_registration_confirmed,
    "registration.promoted": on_registration_confirmed,  # a promoted registration is a confirmed one
}
