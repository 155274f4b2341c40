"""Marshmallow schemas of the evaluation API; the OpenAPI document is generated from them."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from shared.http import PageQuerySchema


class ParticipantQuerySchema(PageQuerySchema):
    opd = fields.Str(load_default=None, validate=validate.Length(max=200))


class ParticipantSchema(Schema):
    nip = fields.Str()
    name = fields.Str()
    email = fields.Str()
    opd = fields.Str()
    position = fields.Str(allow_none=True)
    updated_at = fields.AwareDateTime()
