"""Marshmallow schemas of the registration API; the OpenAPI document is generated from them."""

from __future__ import annotations

from datetime import datetime

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates

from services.registration.rules import nip_problem, normalise_email, normalise_mobile_number
from shared.http import RequestSchema, one_line


class TokenRequestSchema(RequestSchema):
    email = fields.Str(required=True, validate=validate.Length(min=3, max=254))
    password = fields.Str(required=True, validate=validate.Length(min=1, max=200), load_only=True)


class TokenSchema(Schema):
    access_token = fields.Str(required=True)
    token_type = fields.Str(required=True, metadata={"example": "Bearer"})
    expires_in = fields.Int(required=True, metadata={"description": "seconds until the token expires"})


class JwksSchema(Schema):
    keys = fields.List(fields.Dict(), required=True, metadata={"description": "JSON Web Keys (RFC 7517)"})


def within_programme_years(value: datetime) -> None:
    """Sessions happen between 2000 and 2099: anything else is a typo (and would not survive time zones)."""
    if not 2000 <= value.year <= 2099:
        raise ValidationError("Must be a date between the years 2000 and 2099.")


class SessionCreateSchema(RequestSchema):
    title = fields.Str(required=True, validate=[validate.Length(min=3, max=200), one_line])
    starts_at = fields.AwareDateTime(
        required=True, validate=within_programme_years, metadata={"example": "2026-12-07T09:00:00+08:00"}
    )
    ends_at = fields.AwareDateTime(
        required=True, validate=within_programme_years, metadata={"example": "2026-12-07T12:00:00+08:00"}
    )
    location = fields.Str(required=True, validate=[validate.Length(min=2, max=300), one_line])
    capacity = fields.Int(required=True, strict=True, validate=validate.Range(min=1, max=100_000))


class SessionSchema(SessionCreateSchema):
    id = fields.Str(dump_only=True)
    seats_available = fields.Int(dump_only=True)
    confirmed_count = fields.Int(dump_only=True)


class ParticipantSchema(RequestSchema):
    """Who registers: a civil servant (ASN) of an agency (OPD)."""

    name = fields.Str(required=True, validate=[validate.Length(min=2, max=200), one_line])
    nip = fields.Str(required=True, metadata={"description": "NIP, 18 digits 0-9", "example": "198503152010011001"})
    email = fields.Str(required=True, metadata={"example": "sari@kaltaraprov.go.id"})
    phone = fields.Str(required=True, metadata={"example": "0812 3456 7890"})
    opd = fields.Str(
        required=True, validate=[validate.Length(min=2, max=200), one_line], metadata={"description": "agency"}
    )
    position = fields.Str(load_default=None, allow_none=True, validate=[validate.Length(max=200), one_line])

    @validates("nip")
    def _nip(self, value: str, **_kwargs) -> None:
        problem = nip_problem(value)
        if problem:
            raise ValidationError(problem)

    @validates("email")
    def _email(self, value: str, **_kwargs) -> None:
        _reason_as_validation_error(normalise_email, value)

    @validates("phone")
    def _phone(self, value: str, **_kwargs) -> None:
        _reason_as_validation_error(normalise_mobile_number, value)

    @post_load
    def _normalise(self, data: dict, **_kwargs) -> dict:
        return {**data, "email": normalise_email(data["email"]), "phone": normalise_mobile_number(data["phone"])}


def _reason_as_validation_error(normalise, value: str) -> None:
    try:
        normalise(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class RegistrationSchema(Schema):
    id = fields.Str()
    session_id = fields.Str()
    status = fields.Str(metadata={"enum": ["confirmed", "waitlisted", "cancelled"]})
    name = fields.Str()
    nip = fields.Str()
    email = fields.Str()
    phone = fields.Str()
    opd = fields.Str()
    position = fields.Str(allow_none=True)
    created_at = fields.AwareDateTime()
