"""The registration JSON API (``/registration/api/v1``): thin adapters over ``domain``.

Who commits: each view opens its unit of work and commits it once the domain operation has added to it
(the domain never commits); sign-in hands the domain the unit-of-work factory, because it commits the
counted attempt before checking the password.

Who may call what:
- ``POST /auth/token``, ``GET /auth/jwks.json``, ``GET /sessions``, ``GET /sessions/{id}``,
  ``POST /sessions/{id}/registrations`` — anyone (the public registers without an account);
- ``POST /sessions`` — organisers;
- ``GET /registrations/{id}`` — organisers.
"""

from __future__ import annotations

from flask import current_app
from flask_smorest import Blueprint

from services.registration import domain
from services.registration.rules import SeatCount
from services.registration.schemas import (
    JwksSchema,
    ParticipantSchema,
    RegistrationSchema,
    SessionCreateSchema,
    SessionSchema,
    TokenRequestSchema,
    TokenSchema,
)
from services.registration.tables import LabSession
from shared.auth import current_principal, public, requires
from shared.http import PageQuerySchema, client_address, runtime_of
from shared.idempotency import idempotent

blp = Blueprint("registration_api", __name__, description="Accounts, sessions and registrations")


def _session_view(lab_session: LabSession, seats: SeatCount) -> dict:
    return {
        **{c: getattr(lab_session, c) for c in ("id", "title", "starts_at", "ends_at", "location", "capacity")},
        "seats_available": seats.available,
        "confirmed_count": seats.confirmed,
    }


@blp.post("/auth/token")
@public
@blp.arguments(TokenRequestSchema)
@blp.response(200, TokenSchema)
@blp.alt_response(401, description="Wrong e-mail or password")
@blp.alt_response(429, description="Too many attempts from this client (for this address); see Retry-After")
def issue_token(credentials):
    """Exchange an organiser's or evaluator's e-mail and password for a bearer token."""
    principal = domain.authenticate(
        runtime_of().unit_of_work, credentials["email"], credentials["password"], client_address()
    )
    issuer = current_app.extensions["labinov_issuer"]
    return {
        "access_token": issuer.issue(principal),
        "token_type": "Bearer",
        "expires_in": issuer.lifetime_seconds,
    }


@blp.get("/auth/jwks.json")
@public
@blp.response(200, JwksSchema)
def jwks():
    """The public key(s) that verify Labinov tokens (JWKS)."""
    return current_app.extensions["labinov_issuer"].jwks()


@blp.post("/sessions")
@requires("organiser")
@idempotent
@blp.arguments(SessionCreateSchema)
@blp.response(201, SessionSchema)
def create_session(fields):
    """Open a lab session."""
    with runtime_of().unit_of_work() as uow:
        lab_session = domain.create_session(uow, fields, current_principal())
        answer = _session_view(lab_session, domain.seat_count(uow, lab_session))
        uow.commit()
    return answer


@blp.get("/sessions")
@public
@blp.arguments(PageQuerySchema, location="query")
@blp.response(200, SessionSchema(many=True))
def list_sessions(page):
    """Sessions, soonest first, with the seats left (`limit`/`offset` pages through them)."""
    with runtime_of().reading() as uow:
        return [_session_view(*item) for item in domain.list_sessions(uow, page["limit"], page["offset"])]


@blp.get("/sessions/<session_id>")
@public
@blp.response(200, SessionSchema)
def get_session(session_id):
    """One session with the seats left."""
    with runtime_of().reading() as uow:
        lab_session = domain.get_session(uow, session_id)
        return _session_view(lab_session, domain.seat_count(uow, lab_session))


@blp.post("/sessions/<session_id>/registrations")
@public
@idempotent
@blp.arguments(ParticipantSchema)
@blp.response(201, RegistrationSchema)
@blp.alt_response(404, description="No such session")
@blp.alt_response(409, description="This NIP is already registered for the session")
def register(participant, session_id):
    """Register for a session: `confirmed` while seats remain, `waitlisted` after."""
    with runtime_of().unit_of_work() as uow:
        registration = domain.register_participant(uow, session_id, participant)
        uow.commit()  # at once: it releases the lab session's row lock (see domain's module docstring)
    return registration


@blp.get("/registrations/<registration_id>")
@requires("organiser")
@blp.response(200, RegistrationSchema)
def get_registration(registration_id):
    """One registration."""
    with runtime_of().reading() as uow:
        return domain.get_registration(uow, registration_id)
