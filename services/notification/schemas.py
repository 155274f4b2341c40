"""Marshmallow schemas of the notification API; the OpenAPI document is generated from them."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from shared.http import PageQuerySchema


class DeliveryQuerySchema(PageQuerySchema):
    email = fields.Str(load_default=None, validate=validate.Length(max=254), metadata={"description": "recipient"})


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
