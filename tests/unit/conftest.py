"""Fixtures of the unit tests: services on SQLite files under pytest's ``tmp_path``, no servers at all.

Every runtime built here uses the embedded defaults of one data folder (the same one for the three
services, as on a ``make run``), so the signing key a test mints tokens with is the key the apps verify with.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from importlib import import_module
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask

from shared.auth import Principal, TokenIssuer, load_private_key_pem
from shared.config import Settings, load_settings
from shared.migrations import upgrade
from shared.runtime import ServiceRuntime


@pytest.fixture
def data_env(tmp_path) -> dict[str, str]:
    """The environment of an embedded run whose data folder is this test's own."""
    return {"LABINOV_DATA_DIR": str(tmp_path / "var")}


@pytest.fixture
def runtime_for(data_env) -> Callable[[str], ServiceRuntime]:
    """``runtime_for("notification")``: the service's runtime on a migrated SQLite database."""
    made: list[ServiceRuntime] = []

    def make(service: str) -> ServiceRuntime:
        settings = load_settings(service, env=data_env)
        runtime = import_module(f"services.{service}.bootstrap").bootstrap(settings)
        upgrade(runtime)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.engine.dispose()


@pytest.fixture
def app_for(runtime_for) -> Callable[[str], Flask]:
    """``app_for("evaluation")``: the service's Flask app, built by its own ``create_app``."""

    def make(service: str) -> Flask:
        runtime = runtime_for(service)
        load_private_key_pem(runtime.settings)  # as on a make run: registration made the suite's key first
        return import_module(f"services.{service}.app").create_app(runtime)

    return make


@pytest.fixture
def registration_app(app_for) -> Flask:
    return app_for("registration")


@pytest.fixture
def registration_client(registration_app):
    return registration_app.test_client()


@pytest.fixture
def mint_token() -> Callable[..., str]:
    """``mint_token(settings, role)``: a token signed with the suite's key (or ``key_pem``), like registration's."""

    def mint(settings: Settings, role: str, lifetime: int = 3600, key_pem: str | None = None) -> str:
        issuer = TokenIssuer(key_pem or load_private_key_pem(settings), lifetime)
        return issuer.issue(Principal("account-1", f"{role}@kaltaraprov.go.id", role, role.title()))

    return mint


@pytest.fixture
def foreign_key_pem() -> str:
    """An Ed25519 key that Labinov never issued: a token signed with it must be refused."""
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )


@pytest.fixture
def registration_data() -> Callable[..., dict[str, Any]]:
    """``registration_data(**overrides)``: the ``data`` of a valid registration.confirmed event."""

    def make(**overrides: Any) -> dict[str, Any]:
        data = {
            "registration_id": "7d1c1a8e-0000-4000-8000-000000000001",
            "session_id": "7d1c1a8e-0000-4000-8000-0000000000aa",
            "session_title": "Sosialisasi Laboratorium Inovasi Kaltara",
            "session_starts_at": datetime(2026, 12, 7, 1, 0, tzinfo=UTC),
            "session_location": "Kantor Gubernur Kaltara, Tanjung Selor",
            "status": "confirmed",
            "name": "Sari Wulandari",
            "nip": "198503152010012001",
            "email": "sari@kaltaraprov.go.id",
            "phone": "+6281234567890",
            "opd": "Dinas Kesehatan",
            "position": "Analis Kebijakan",
        }
        return {**data, **overrides}

    return make
