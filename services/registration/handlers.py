"""Event handlers of the registration service: none yet — it only publishes (see SUBSCRIPTIONS)."""

from __future__ import annotations

from shared.messaging.consumer import Handler

HANDLERS: dict[str, Handler] = {}
