"""The notification JSON API (``/notification/api/v1``).

Who may call what (``@requires`` on each view) — every route here is for organisers, since each shows
participants' addresses or speaks to them:
- ``GET /deliveries`` (``?status=held`` lists what the hourly cap held back);
- ``POST /announcements``, ``GET /announcements``, ``GET /announcements/{id}``,
  ``POST /announcements/{id}/cancel``, ``POST /announcements/{id}/retry-failed``, ``POST /announcements/preview``;
- ``POST /webhooks``, ``GET /webhooks``, ``PATCH /webhooks/{id}`` (switch on/off), ``DELETE /webhooks/{id}``,
  ``GET /webhooks/{id}/deliveries`` — organisers;
- ``GET /inbox``, ``POST /inbox/{id}/read`` — a participant with their token, their own registration only (a
  cancelled one's token is 403; an organiser's is 403: it is the participant's own);
- ``POST /gateway/status`` — the SMS/WhatsApp gateway, with the shared secret in ``X-Gateway-Secret``
  (``LABINOV_SMS_GATEWAY_SECRET``); ``POST /mail/bounces`` — the mail provider, with the shared secret in
  ``X-Bounce-Secret`` (``LABINOV_MAIL_BOUNCE_SECRET``): other systems, no token; ``@requires_shared_secret``
  compares the header in constant time and answers 401 otherwise, also while no secret is configured.

Who commits: each view opens its unit of work and commits it once the domain operation has added to it.
"""

from __future__ import annotations

from flask_smorest import Blueprint

from services.notification import announcements, bounces, domain, gateway, inbox, webhooks
from services.notification.schemas import (
    AnnouncementCreateSchema,
    AnnouncementSchema,
    DeliveryQuerySchema,
    DeliverySchema,
    GatewayDeliverySchema,
    GatewayStatusSchema,
    InboxMessageSchema,
    MailBounceSchema,
    PreviewSchema,
    RetriedSchema,
    WebhookChangeSchema,
    WebhookCreatedSchema,
    WebhookCreateSchema,
    WebhookDeliverySchema,
    WebhookSchema,
)
from shared.auth import current_principal, requires, requires_shared_secret
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


# --- a mail provider's bounce report ----------------------------------------------------------------------


@blp.post("/mail/bounces")
@requires_shared_secret("X-Bounce-Secret", lambda settings: settings.mail_bounce_secret, "the mail provider")
@blp.arguments(MailBounceSchema)
@blp.response(200, DeliverySchema)
@blp.alt_response(401, description="No X-Bounce-Secret header, or not the configured secret")
@blp.alt_response(404, description="No mail of ours has this Message-ID")
def mail_bounce(data):
    """The mail provider reports that a mail it had accepted bounced for good: the delivery becomes `bounced`,
    told as `notification.failed`. A repeat, or a report about mail that did not go, changes nothing.
    Called by the provider, not by people: it authenticates with the shared secret in `X-Bounce-Secret`
    (`LABINOV_MAIL_BOUNCE_SECRET`)."""
    with runtime_of().unit_of_work() as uow:
        row = bounces.record_bounce(uow, data["message_id"], data["error"])
        uow.commit()
        return row


# --- the SMS/WhatsApp gateway's status callback ---------------------------------------------------------------


@blp.post("/gateway/status")
@requires_shared_secret("X-Gateway-Secret", lambda settings: settings.sms_gateway_secret, "the SMS/WhatsApp gateway")
@blp.arguments(GatewayStatusSchema)
@blp.response(200, GatewayDeliverySchema)
@blp.alt_response(401, description="No X-Gateway-Secret header, or not the configured secret")
@blp.alt_response(404, description="No message with this reference")
def gateway_status(data):
    """The gateway reports what became of a message: `delivered`, or `failed` (also `undelivered`,
    `rejected`), which makes a message the gateway had accepted `bounced`. A report that arrives before the
    sender recorded the gateway's answer is the outcome; a repeat, or one about a final message, changes
    nothing. Called by the gateway, not by people: it authenticates with the shared secret in
    `X-Gateway-Secret` (`LABINOV_SMS_GATEWAY_SECRET`)."""
    with runtime_of().unit_of_work() as uow:
        row = gateway.record_status(uow, data["reference"], data["status"], data["error"])
        uow.commit()
        return row


# --- the in-app inbox ---------------------------------------------------------------------------------------


@blp.get("/inbox")
@requires("participant")
@blp.arguments(PageQuerySchema, location="query")
@blp.response(200, InboxMessageSchema(many=True))
@blp.alt_response(403, description="The token's registration is cancelled")
def list_inbox(query):
    """The participant's messages — what the suite told their registration, on any channel — newest first."""
    with runtime_of().reading() as uow:
        registration_id = inbox.registration_of(uow, current_principal())
        return inbox.messages_of(uow, registration_id, query["limit"], query["offset"])


@blp.post("/inbox/<message_id>/read")
@requires("participant")
@blp.response(200, InboxMessageSchema)
@blp.alt_response(403, description="The token's registration is cancelled")
@blp.alt_response(404, description="No such message in this inbox")
def mark_inbox_message_read(message_id):
    """Mark one of the participant's messages read."""
    with runtime_of().unit_of_work() as uow:
        message = inbox.mark_read(uow, inbox.registration_of(uow, current_principal()), message_id)
        uow.commit()
        return message


# --- outgoing webhooks --------------------------------------------------------------------------------------


@blp.post("/webhooks")
@requires("organiser")
@idempotent
@blp.arguments(WebhookCreateSchema)
@blp.response(201, WebhookCreatedSchema)
@blp.alt_response(422, description="A URL that may not be called (named why), or an unknown event type")
def create_webhook(data):
    """Have chosen events POSTed to a URL, signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`,
    `webhook-signature`). The answer's `secret` (`whsec_...`) verifies them; it is shown only here."""
    runtime = runtime_of()
    principal = current_principal()
    with runtime.unit_of_work() as uow:
        created = webhooks.create(uow, data, principal.email if principal else "", runtime.settings.webhook_allow_local)
        uow.commit()
        return webhooks.view(created, with_secret=True)


@blp.get("/webhooks")
@requires("organiser")
@blp.arguments(PageQuerySchema, location="query")
@blp.response(200, WebhookSchema(many=True))
def list_webhooks(query):
    """The webhooks, newest first, with whether each is still on (and why not)."""
    with runtime_of().reading() as uow:
        return [webhooks.view(w) for w in webhooks.list_webhooks(uow, query["limit"], query["offset"])]


@blp.patch("/webhooks/<webhook_id>")
@requires("organiser")
@blp.arguments(WebhookChangeSchema)
@blp.response(200, WebhookSchema)
@blp.alt_response(404, description="No such webhook")
@blp.alt_response(422, description="Switching on a webhook whose URL may no longer be called (named why)")
def change_webhook(data, webhook_id):
    """Switch a webhook on — also one switched off after repeated failure, its failures counted afresh and its
    URL checked again — or off (what is still queued for it is then cancelled, not sent)."""
    runtime = runtime_of()
    with runtime.unit_of_work() as uow:
        webhook = webhooks.switch(uow, webhook_id, data["active"], runtime.settings.webhook_allow_local)
        uow.commit()
        return webhooks.view(webhook)


@blp.delete("/webhooks/<webhook_id>")
@requires("organiser")
@blp.response(204)
@blp.alt_response(404, description="No such webhook")
def delete_webhook(webhook_id):
    """Remove a webhook with its deliveries; nothing more is sent to it."""
    with runtime_of().unit_of_work() as uow:
        webhooks.delete(uow, webhook_id)
        uow.commit()


@blp.get("/webhooks/<webhook_id>/deliveries")
@requires("organiser")
@blp.arguments(PageQuerySchema, location="query")
@blp.response(200, WebhookDeliverySchema(many=True))
def list_webhook_deliveries(query, webhook_id):
    """What was sent to the webhook, newest first, each with every attempt (its HTTP status or error)."""
    with runtime_of().reading() as uow:
        return webhooks.deliveries_of(uow, webhook_id, query["limit"], query["offset"])
