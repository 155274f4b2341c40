"""Wires the registration service: settings, database, outbox — shared by web, worker and tests."""

from __future__ import annotations

from pathlib import Path

from services.registration.tables import Base
from shared.config import Settings
from shared.runtime import ServiceRuntime, build_runtime

NAME = "registration"


def bootstrap(settings: Settings | None = None) -> ServiceRuntime:
    return build_runtime(NAME, Base.metadata, Path(__file__).parent, settings)
