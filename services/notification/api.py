"""The notification JSON API (``/notification/api/v1``).

Who may call what:
- ``GET /deliveries`` — organisers (it shows participants' addresses).
"""

from __future__ import annotations

from flask_smorest import Blueprint

from services.notification import domain
from services.notification.schemas import DeliveryQuerySchema, DeliverySchema
from shared.auth import requires
from shared.http import runtime_of

blp = Blueprint("notification_api", __name__, description="Messages to participants and their delivery")


@blp.get("/deliveries")
@requires("organiser")
@blp.arguments(DeliveryQuerySchema, location="query")
@blp.response(200, DeliverySchema(many=True))
def list_deliveries(query):
    """Deliveries, newest first, optionally to one address, with their status."""
    with runtime_of().reading() as uow:
        return domain.list_deliveries(uow, query["email"], query["limit"], query["offset"])
