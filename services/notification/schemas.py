"""Marshmallow schemas of the notification API; the OpenAPI document is generated from them."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


class DeliveryQuerySchema(Schema):
    email = fields.Str(load_default=None, validate=validate.Length(max=254), metadata={"description": "recipient"})
    limit = fields.Int(load_default=50, validate=validate.Range(min=1, max=500))
    offset = fields.Int(load_default=0, validate=validate.Range(min=0))


class DeliverySchema(Schema):
    id = fields.Str()
    channel = fields.Str()
    recipient = fields.Str()
    template = fields.Str()
    subject = fields.Str()
    status = fields.Str(metadata={"enum": ["pending", "sent", "failed"]})
    attempts = fields.Int()
    last_error = fields.Str(allow_none=True)
    caused_by = fields.Str(metadata={"description": "id of the event that asked for this message"})
    created_at = fields.AwareDateTime()
    sent_at = fields.AwareDateTime(allow_none=True)
