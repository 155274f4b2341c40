"""Marshmallow schemas of the evaluation API; the OpenAPI document is generated from them."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


class ParticipantQuerySchema(Schema):
    opd = fields.Str(load_default=None, validate=validate.Length(max=200))
    limit = fields.Int(load_default=100, validate=validate.Range(min=1, max=500))
    offset = fields.Int(load_default=0, validate=validate.Range(min=0))


class ParticipantSchema(Schema):
    nip = fields.Str()
    name = fields.Str()
    email = fields.Str()
    opd = fields.Str()
    position = fields.Str(allow_none=True)
    updated_at = fields.AwareDateTime()
