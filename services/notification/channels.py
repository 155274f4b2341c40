"""What every consumed event also does beyond its mail: the other channels, in the handler's own transaction.

After an event's handler (``handlers.py``) has written its mail deliveries, :func:`after_event` — still in that
transaction, so with the same inbox row and the same all-or-nothing — copies what the event caused into the
in-app inbox of the registrations it concerns (:mod:`.inbox`), writes the short SMS variant of the kinds
named in ``LABINOV_SMS_MESSAGES`` (:mod:`.gateway`), and queues one delivery per webhook subscribed to the
event's type (:mod:`.webhooks`). Each write is ``ON CONFLICT DO NOTHING`` on its own unique key, so a
redelivered event or a racing worker adds nothing twice. A handler that raises writes none of them.
"""

from __future__ import annotations

from services.notification import gateway, inbox, webhooks
from shared.config import Settings
from shared.db import UnitOfWork
from shared.events import Event


def after_event(uow: UnitOfWork, event: Event, settings: Settings) -> None:
    inbox.copy_event_messages(uow, event)
    gateway.queue_transactional(uow, event, settings.sms_messages)
    webhooks.queue_for_event(uow, event)
