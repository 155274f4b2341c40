"""Event handlers of the notification service: thin adapters from events to domain operations."""

from __future__ import annotations

from functools import cache
from zoneinfo import ZoneInfo

from services.notification import domain
from shared.config import load_settings
from shared.db import UnitOfWork
from shared.events import Event
from shared.messaging.consumer import Handler


@cache
def programme_timezone() -> ZoneInfo:
    """Where the programme's times are shown (``LABINOV_TIMEZONE``), read once per worker process."""
    return load_settings("notification").timezone


def on_registration(uow: UnitOfWork, event: Event) -> None:
    domain.notify_registration(uow, event, programme_timezone())


def on_results_published(uow: UnitOfWork, event: Event) -> None:
    domain.notify_result(uow, event, programme_timezone())


HANDLERS: dict[str, Handler] = {
    **{event_type: on_registration for event_type, _status in domain.REGISTRATION_MAILS},
    "results.published": on_results_published,
}
