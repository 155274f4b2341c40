"""The registration service's Flask app factory."""

from __future__ import annotations

from flask import Flask

from services.registration.api import blp
from services.registration.bootstrap import bootstrap
from services.registration.domain import ParticipantLinks
from services.registration.pages import pages
from shared.http import create_service_app
from shared.runtime import ServiceRuntime


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
    # the service's signer, public address and ticket key, made once: the views hand them to the operations
    # that publish registration events (their mails carry the participant's link and ticket)
    links = ParticipantLinks.from_settings(runtime.settings)
    app.extensions["labinov_participant_links"] = links
    app.extensions["labinov_issuer"] = links.issuer
    return app
