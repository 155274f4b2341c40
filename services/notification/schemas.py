"""Marshmallow schemas of the notification API; the OpenAPI document is generated from them."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from services.notification.announcements import AUDIENCE_STATUSES, CHANNELS
from services.notification.tables import DELIVERY_STATES
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
