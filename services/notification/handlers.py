"""Event handlers of the notification service: thin adapters from events to domain operations."""

from __future__ import annotations

from services.notification import domain
from shared.db import UnitOfWork
from shared.events import Event
from shared.messaging.consumer import Handler


def on_registration(uow: UnitOfWork, event: Event) -> None:
    domain.notify_registration(uow, event)


HANDLERS: dict[str, Handler] = {
    "registration.confirmed": on_registration,
    "registration.waitlisted": on_registration,
}
