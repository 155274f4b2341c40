"""Marshmallow schemas of the notification API; the OpenAPI document is generated from them."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from services.notification.announcements import AUDIENCE_STATUSES, CHANNELS
from services.notification.gateway import CALLBACK_STATUSES
from services.notification.tables import DELIVERY_STATES, GATEWAY_STATES, WEBHOOK_DELIVERY_STATES
from services.notification.webhooks import EVENT_TYPES
from shared.http import PageQuerySchema, RequestSchema


class DeliveryQuerySchema(PageQuerySchema):
    email = fields.Str(load_default=None, validate=validate.Length(max=254), metadata={"description": "recipient"})
    status = fields.Str(load_default=None, validate=validate.OneOf(DELIVERY_STATES))


class DeliverySchema(Schema):
    id = fields.Str()
    channel = fields.Str()
    recipient = fields.Str()
    language = fields.Str()
    template = fields.Str()
    subject = fields.Str()
    status = fields.Str(
        metadata={
            "enum": list(DELIVERY_STATES),
            "description": "held: stopped by the hourly cap on mail from public causes, never sent",
        }
    )
    attempts = fields.Int()
    last_error = fields.Str(allow_none=True)
    caused_by = fields.Str(metadata={"description": "id of the event or announcement that asked for this message"})
    announcement_id = fields.Str(allow_none=True)
    created_at = fields.AwareDateTime()
    sent_at = fields.AwareDateTime(allow_none=True)


class AudienceSchema(RequestSchema):
    """Exactly one of: a session's registrants (by status, or those checked in), a programme, an agency, a list."""

    session_id = fields.Str(validate=validate.Length(min=1, max=64))
    statuses = fields.List(fields.Str(validate=validate.OneOf(AUDIENCE_STATUSES)), validate=validate.Length(min=1))
    checked_in = fields.Bool(metadata={"description": "with session_id: only those checked in to it"})
    programme_id = fields.Str(validate=validate.Length(min=1, max=64))
    opd = fields.Str(validate=validate.Length(min=1, max=200))
    emails = fields.List(fields.Email(), validate=validate.Length(min=1, max=20000))

    @validates_schema
    def _exactly_one_kind(self, data, **_kwargs):
        kinds = [kind for kind in ("session_id", "programme_id", "opd", "emails") if kind in data]
        if len(kinds) != 1:
            raise ValidationError("Give exactly one of session_id, programme_id, opd or emails.", "audience")
        if ("statuses" in data or "checked_in" in data) and "session_id" not in data:
            raise ValidationError("statuses and checked_in go with session_id.", "statuses")


class AnnouncementCreateSchema(RequestSchema):
    subject = fields.Str(
        required=True,
        validate=validate.Length(min=1, max=200),
        metadata={"description": "placeholders such as {name} and {session_title} are filled per recipient"},
    )
    body = fields.Str(required=True, validate=validate.Length(min=1, max=20000))
    channels = fields.List(
        fields.Str(validate=validate.OneOf(CHANNELS)), required=True, validate=validate.Length(min=1)
    )
    send_at = fields.AwareDateTime(load_default=None, metadata={"description": "later; now when absent"})
    audience = fields.Nested(AudienceSchema, required=True)


class PreviewSchema(Schema):
    recipient = fields.Str()
    subject = fields.Str()
    text = fields.Str()
    audience = fields.Int(metadata={"description": "how many would get it now"})


class FailureSchema(Schema):
    recipient = fields.Str()
    error = fields.Str(allow_none=True)
    attempts = fields.Int()


class AnnouncementSchema(Schema):
    id = fields.Str()
    status = fields.Str(metadata={"enum": ["scheduled", "sending", "sent", "cancelled"]})
    subject = fields.Str()
    body = fields.Str()
    channels = fields.List(fields.Str())
    audience = fields.Dict()
    send_at = fields.AwareDateTime()
    created_at = fields.AwareDateTime()
    total = fields.Int()
    queued = fields.Int()
    sent = fields.Int()
    failed = fields.Int()
    cancelled = fields.Int()
    opted_out = fields.Int()
    failures = fields.List(fields.Nested(FailureSchema))


class RetriedSchema(Schema):
    retried = fields.Int()


# --- a mail provider's bounce report ---------------------------------------------------------------------------


class MailBounceSchema(RequestSchema):
    """A mail provider reports that mail it had accepted bounced for good; fields it adds of its own are ignored."""

    class Meta:
        unknown = EXCLUDE

    message_id = fields.Str(
        required=True,
        validate=validate.Length(min=3, max=300),
        metadata={"description": "the bounced mail's `Message-ID` header, e.g. `<id@labinov.local>`"},
    )
    error = fields.Str(
        load_default="the recipient's mail server refused the mail",
        validate=validate.Length(min=1, max=2000),
        metadata={"description": "what the provider says, e.g. `550 5.1.1 mailbox unknown`"},
    )


# --- the gateway's status callback ---------------------------------------------------------------------------


class GatewayStatusSchema(RequestSchema):
    """What the SMS/WhatsApp gateway reports about one message; fields it adds of its own are ignored."""

    class Meta:
        unknown = EXCLUDE

    reference = fields.Str(
        required=True,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "the `reference` we sent with the message (its delivery id)"},
    )
    status = fields.Str(required=True, validate=validate.OneOf(list(CALLBACK_STATUSES)))
    error = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class GatewayDeliverySchema(Schema):
    id = fields.Str()
    channel = fields.Str()
    status = fields.Str(metadata={"enum": list(GATEWAY_STATES)})
    attempts = fields.Int()
    last_error = fields.Str(allow_none=True)
    sent_at = fields.AwareDateTime(allow_none=True)
    delivered_at = fields.AwareDateTime(allow_none=True)


# --- the in-app inbox ----------------------------------------------------------------------------------------


class InboxMessageSchema(Schema):
    id = fields.Str()
    template = fields.Str(metadata={"description": "what kind of message: registration_confirmed, announcement, ..."})
    subject = fields.Str()
    body = fields.Str(metadata={"description": "the plain text"})
    created_at = fields.AwareDateTime()
    read_at = fields.AwareDateTime(allow_none=True)


# --- outgoing webhooks ---------------------------------------------------------------------------------------


class WebhookCreateSchema(RequestSchema):
    url = fields.Str(
        required=True,
        validate=validate.Length(min=1, max=2000),
        metadata={
            "description": "https:// on the public internet (http:// and local addresses only with "
            "LABINOV_WEBHOOK_ALLOW_LOCAL); checked when made and before every attempt"
        },
    )
    event_types = fields.List(
        fields.Str(validate=validate.OneOf(EVENT_TYPES)),
        required=True,
        validate=validate.Length(min=1, max=len(EVENT_TYPES)),
        metadata={"description": f"any of: {', '.join(EVENT_TYPES)}"},
    )


class WebhookChangeSchema(RequestSchema):
    active = fields.Bool(
        required=True,
        metadata={"description": "true switches it on (also after repeated failure: counting starts afresh)"},
    )


class WebhookSchema(Schema):
    id = fields.Str()
    url = fields.Str()
    event_types = fields.List(fields.Str())
    active = fields.Bool(metadata={"description": "false once switched off after repeated failure (see the reason)"})
    consecutive_failures = fields.Int()
    disabled_at = fields.AwareDateTime(allow_none=True)
    disabled_reason = fields.Str(allow_none=True)
    created_at = fields.AwareDateTime()


class WebhookCreatedSchema(WebhookSchema):
    secret = fields.Str(
        metadata={"description": "the Standard Webhooks signing key (whsec_...): shown only now, keep it"}
    )


class WebhookAttemptSchema(Schema):
    at = fields.AwareDateTime()
    outcome = fields.Str(metadata={"description": "sent, retry, failed or cancelled"})
    error = fields.Str(allow_none=True, metadata={"description": "the HTTP status or the error"})


class WebhookDeliverySchema(Schema):
    id = fields.Str(metadata={"description": "the webhook-id header, the same on every attempt"})
    event_id = fields.Str()
    event_type = fields.Str()
    status = fields.Str(metadata={"enum": list(WEBHOOK_DELIVERY_STATES)})
    attempts = fields.Int()
    last_error = fields.Str(allow_none=True)
    next_attempt_at = fields.AwareDateTime(allow_none=True)
    created_at = fields.AwareDateTime()
    sent_at = fields.AwareDateTime(allow_none=True)
    tries = fields.List(fields.Nested(WebhookAttemptSchema), metadata={"description": "every attempt, oldest first"})
