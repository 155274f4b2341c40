"""What every consumed event also does beyond its mail: the other channels, in the handler's own transaction.

After an event's handler (``handlers.py``) has written its mail deliveries, :func:`after_event` — still in that
transaction, so with the same inbox row and the same all-or-nothing — copies what the event caused into the
in-app inbox of the registrations it concerns (:mod:`.inbox`), writes the short SMS variant of the kinds
named in ``LABINOV_SMS_MESSAGES`` (:mod:`.gateway`), and queues one delivery per webhook subscribed to the
event's type (:mod:`.webhooks`). Each write is ``ON CONFLICT DO NOTHING`` on its own unique key, so a
redelivered event or a racing worker adds nothing twice. A handler that raises writes none of them. On
PostgreSQL a registration event's inbox copy and webhook deliveries are parts of its mail's one statement
(:func:`.domain.notify_registration`), so they are not written here again.
"""

from __future__ import annotations

from services.notification import domain, gateway, inbox, webhooks
from shared.config import Settings
from shared.db import UnitOfWork
from shared.events import Event


def after_event(uow: UnitOfWork, event: Event, settings: Settings) -> None:
    """The event's other channels; a registration event's inbox copy and webhook deliveries were already written
    by its mail's one statement on PostgreSQL (:func:`services.notification.domain.writes_other_channels_together`)."""
    together = domain.writes_other_channels_together(uow, event)
    if not together:
        inbox.copy_event_messages(uow, event)
    gateway.queue_transactional(uow, event, settings.sms_messages)
    if not together:
        webhooks.queue_for_event(uow, event)
