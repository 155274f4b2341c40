"""The notification service's Flask app factory."""

from __future__ import annotations

from flask import Flask

from services.notification.api import blp
from services.notification.bootstrap import bootstrap
from services.notification.pages import pages, unsubscribe
from shared.http import create_service_app
from shared.runtime import ServiceRuntime


def create_app(runtime: ServiceRuntime | None = None) -> Flask:
    runtime = runtime or bootstrap()
    app = create_service_app(
        runtime,
        __name__,
        api_title="Labinov notification",
        api_blueprints=[blp],
        page_blueprints=[pages],
        description="What participants, teams and evaluators hear from the programme, and whether it arrived.",
    )
    # a mail program's one-click opt-out (RFC 8058) carries no CSRF token: the signed link is the authority
    app.extensions["csrf"].exempt(unsubscribe)
    return app
