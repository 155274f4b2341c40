"""The registration API as a test drives it in-process: the real app (its own ``create_app``) on a migrated
runtime, an organiser's token, and the events its transactions wrote to the outbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from services.registration.app import create_app
from shared.runtime import ServiceRuntime
from shared.tokens import Principal, TokenIssuer, load_private_key_pem
from tests.support.suite import participant

API = "/registration/api/v1"
ORGANISER = Principal("organiser-1", "panitia@kaltaraprov.go.id", "organiser", "Panitia")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class RegistrationApi:
    """An organiser's and the public's view of one registration service."""

    def __init__(self, runtime: ServiceRuntime, organiser: Principal = ORGANISER) -> None:
        self.runtime = runtime
        self.client = create_app(runtime).test_client()
        self.organiser = bearer(TokenIssuer(load_private_key_pem(runtime.settings), 3600).issue(organiser))

    def new_programme(
        self, opds: list[str], opd_quota: int | None = None, name: str = "Laboratorium Inovasi Kaltara 2027"
    ) -> str:
        body = {"name": name, "year": 2027, "opds": opds, "opd_quota": opd_quota}
        response = self.client.post(f"{API}/programmes", json=body, headers=self.organiser)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def new_session(self, capacity: int, title: str, **fields) -> dict:
        """A published session a month from now (``fields`` override), as the API answered it."""
        start = datetime.now(UTC) + timedelta(days=30)
        body = {
            "title": title,
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=3)).isoformat(),
            "location": "Kantor Gubernur Kaltara",
            "capacity": capacity,
            **fields,
        }
        response = self.client.post(f"{API}/sessions", json=body, headers=self.organiser)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def post_registration(self, session_id: str, i: int, **overrides):
        """The answer to registering participant ``i`` (see ``tests.support.suite.participant``)."""
        return self.client.post(f"{API}/sessions/{session_id}/registrations", json=participant(i, **overrides))

    def events(self, event_type: str | None = None) -> list[dict]:
        """The envelopes in the outbox, oldest first (of ``event_type`` only, if given)."""
        outbox = self.runtime.outbox
        query = select(outbox.c.payload).order_by(outbox.c.id)
        if event_type:
            query = query.where(outbox.c.event_type == event_type)
        with self.runtime.engine.connect() as connection:
            return [json.loads(payload) for (payload,) in connection.execute(query)]
