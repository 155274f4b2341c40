"""A service's runtime on a given database, migrated, for tests that call domain operations directly."""

from __future__ import annotations

import importlib
from datetime import datetime
from pathlib import Path

from shared.config import load_settings
from shared.migrations import upgrade
from shared.runtime import ServiceRuntime


def migrated_runtime(
    service: str, data_dir: Path, database_url: str | None = None, broker_url: str | None = None
) -> ServiceRuntime:
    env = {"LABINOV_DATA_DIR": str(data_dir)}
    if database_url:
        env[f"LABINOV_{service.upper()}_DATABASE_URL"] = database_url
    if broker_url:
        env["LABINOV_BROKER_URL"] = broker_url
    runtime = importlib.import_module(f"services.{service}.bootstrap").bootstrap(load_settings(service, env))
    upgrade(runtime)
    return runtime


def create_session_directly(runtime: ServiceRuntime, capacity: int, title: str = "Sosialisasi"):
    """A lab session made through the domain operation (no HTTP), as an organiser would make it."""
    from services.registration import domain
    from shared.auth import Principal

    with runtime.unit_of_work() as uow:
        lab_session = domain.create_session(
            uow,
            {
                "title": title,
                "starts_at": datetime.fromisoformat("2027-03-01T09:00:00+08:00"),
                "ends_at": datetime.fromisoformat("2027-03-01T12:00:00+08:00"),
                "location": "Kantor Gubernur Kaltara",
                "capacity": capacity,
            },
            Principal("organiser-1", "panitia@kaltaraprov.go.id", "organiser"),
        )
        uow.commit()
    return lab_session


def create_account_directly(runtime: ServiceRuntime, email: str, password: str, role: str = "organiser"):
    """An organiser (or evaluator) account made through the domain operation, as ``labinov user create`` does."""
    from services.registration import domain

    with runtime.unit_of_work() as uow:
        account = domain.create_account(uow, role, email, password)
        uow.commit()
    return account
