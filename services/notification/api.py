"""The notification JSON API (``/notification/api/v1``).

Who may call what (``@requires`` on each view) — every route here is for organisers, since each shows
participants' addresses or speaks to them:
- ``GET /deliveries`` (``?status=held`` lists what the hourly cap held back);
- ``POST /announcements``, ``GET /announcements``, ``GET /announcements/{id}``,
  ``POST /announcements/{id}/cancel``, ``POST /announcements/{id}/retry-failed``, ``POST /announcements/preview``.

Who commits: each view opens its unit of work and commits it once the domain operation has added to it.
"""

from __future__ import annotations

from flask_smorest import Blueprint

from services.notification import announcements, domain
from services.notification.schemas import (
    AnnouncementCreateSchema,
    AnnouncementSchema,
    DeliveryQuerySchema,
    DeliverySchema,
    PreviewSchema,
    RetriedSchema,
)
from shared.auth import current_principal, requires
from shared.errors import NotFound
from shared.http import PageQuerySchema, runtime_of
from shared.idempotency import idempotent
from shared.observability import current_correlation_id

blp = Blueprint("notification_api", __name__, description="Messages to participants and their delivery")


@blp.get("/deliveries")
@requires("organiser")
@blp.arguments(DeliveryQuerySchema, location="query")
@blp.response(200, DeliverySchema(many=True))
def list_deliveries(query):
    """Deliveries, newest first, optionally to one address or in one state, with their status."""
    with runtime_of().reading() as uow:
        return domain.list_deliveries(uow, query["email"], query["limit"], query["offset"], query["status"])


@blp.post("/announcements")
@requires("organiser")
@idempotent
@blp.arguments(AnnouncementCreateSchema)
@blp.response(201, AnnouncementSchema)
@blp.alt_response(422, description="A field breaks a rule, or a placeholder is not in the fixed list (named)")
def create_announcement(data):
    """Announce something to an audience, now or at `send_at`. Placeholders (in braces): `{name}`,
    `{email}`, `{opd}`, `{session_title}`, `{session_starts_at}`, `{session_location}`, `{online_url}`;
    `{{` and `}}` write a brace. The audience is read when it goes out; each address gets one message."""
    principal = current_principal()
    with runtime_of().unit_of_work() as uow:
        created = announcements.create(uow, data, principal.email if principal else "", current_correlation_id())
        uow.commit()
        return announcements.progress(uow, created)


@blp.get("/announcements")
@requires("organiser")
@blp.arguments(PageQuerySchema, location="query")
@blp.response(200, AnnouncementSchema(many=True))
def list_announcements(query):
    """Announcements, newest first, each with its progress."""
    with runtime_of().reading() as uow:
        found = announcements.list_recent(uow, query["limit"], query["offset"])
        return [announcements.progress(uow, a, failures=0) for a in found]


@blp.post("/announcements/preview")
@requires("organiser")
@blp.arguments(AnnouncementCreateSchema)
@blp.response(200, PreviewSchema)
@blp.alt_response(404, description="Nobody is in the audience now")
def preview_announcement(data):
    """What the first member of the audience would get, placeholders filled; nothing is stored or sent."""
    runtime = runtime_of()
    with runtime.reading() as uow:
        shown = announcements.preview(uow, runtime, data)
    if shown is None:
        raise NotFound("Nobody is in this audience now.")
    return shown


@blp.get("/announcements/<announcement_id>")
@requires("organiser")
@blp.response(200, AnnouncementSchema)
def get_announcement(announcement_id):
    """An announcement's progress: `total`, `queued`, `sent`, `failed`, and the failures."""
    with runtime_of().reading() as uow:
        return announcements.progress(uow, announcements.get(uow, announcement_id))


@blp.post("/announcements/<announcement_id>/cancel")
@requires("organiser")
@blp.response(200, AnnouncementSchema)
@blp.alt_response(409, description="It has gone out already (or is going out now)")
def cancel_announcement(announcement_id):
    """Stop an announcement before it goes out."""
    with runtime_of().unit_of_work() as uow:
        cancelled = announcements.cancel(uow, announcement_id)
        uow.commit()
        return announcements.progress(uow, cancelled)


@blp.post("/announcements/<announcement_id>/retry-failed")
@requires("organiser")
@blp.response(200, RetriedSchema)
def retry_failed_deliveries(announcement_id):
    """Send the announcement's failed deliveries again (each with fresh attempts)."""
    with runtime_of().unit_of_work() as uow:
        retried = announcements.retry_failed(uow, announcement_id)
        uow.commit()
        return {"retried": retried}
