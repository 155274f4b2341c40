"""The registration service's Flask app factory."""

from __future__ import annotations

from flask import Flask

from services.registration.api import blp
from services.registration.bootstrap import bootstrap
from services.registration.pages import pages
from shared.http import create_service_app
from shared.runtime import ServiceRuntime
from shared.tokens import TokenIssuer, load_private_key_pem


def create_app(runtime: ServiceRuntime | None = None) -> Flask:
    runtime = runtime or bootstrap()
    app = create_service_app(
        runtime,
        __name__,
        api_title="Labinov registration",
        api_blueprints=[blp],
        page_blueprints=[pages],
        description="Lab sessions, registrations and the accounts that sign Labinov tokens.",
    )
    settings = runtime.settings
    app.extensions["labinov_issuer"] = TokenIssuer(load_private_key_pem(settings), settings.token_lifetime_seconds)
    return app
