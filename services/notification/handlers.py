"""Event handlers of the notification service: thin adapters from events to domain operations.

Each handler is wrapped by :func:`_with_other_channels`: after the domain operation has written its mail, the
same transaction also writes the event's inbox copies, SMS variants and webhook deliveries
(:func:`services.notification.channels.after_event`)."""

from __future__ import annotations

from functools import cache

from services.notification import channels, domain
from shared.config import Settings, load_settings
from shared.db import UnitOfWork
from shared.events import Event
from shared.messaging.consumer import Handler


@cache
def settings() -> Settings:
    """Where times are shown (``LABINOV_TIMEZONE``), links point and the hourly cap, read once per process."""
    return load_settings("notification")


def on_registration(uow: UnitOfWork, event: Event) -> None:
    domain.notify_registration(uow, event, settings().timezone, settings().mail_hourly_cap)


def on_session_changed(uow: UnitOfWork, event: Event) -> None:
    domain.notify_session_changed(uow, event, settings().timezone)


def on_session_cancelled(uow: UnitOfWork, event: Event) -> None:
    domain.notify_session_cancelled(uow, event, settings().timezone)


def on_checked_in(uow: UnitOfWork, event: Event) -> None:
    domain.remember_check_in(uow, event)


def on_proposal_submitted(uow: UnitOfWork, event: Event) -> None:
    domain.notify_proposal_received(uow, event, settings().timezone)


def on_evaluation_assigned(uow: UnitOfWork, event: Event) -> None:
    domain.notify_evaluator_assigned(uow, event, settings().public_url)


def on_results_published(uow: UnitOfWork, event: Event) -> None:
    domain.notify_result(uow, event, settings().timezone)


def on_objection_answered(uow: UnitOfWork, event: Event) -> None:
    domain.notify_objection_answered(uow, event, settings().timezone)


def _with_other_channels(handler: Handler) -> Handler:
    def handle(uow: UnitOfWork, event: Event) -> None:
        handler(uow, event)
        channels.after_event(uow, event, settings())

    handle.__name__ = handler.__name__
    handle.__doc__ = handler.__doc__
    return handle


_MAIL_HANDLERS: dict[str, Handler] = {
    **{event_type: on_registration for event_type, _status in domain.REGISTRATION_MAILS},
    "session.changed": on_session_changed,
    "session.cancelled": on_session_cancelled,
    "participant.checked_in": on_checked_in,
    "proposal.submitted": on_proposal_submitted,
    "evaluation.assigned": on_evaluation_assigned,
    "results.published": on_results_published,
    "objection.answered": on_objection_answered,
}
HANDLERS: dict[str, Handler] = {
    event_type: _with_other_channels(handler) for event_type, handler in _MAIL_HANDLERS.items()
}
