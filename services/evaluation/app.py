"""The evaluation service's Flask app factory."""

from __future__ import annotations

from flask import Flask

from services.evaluation.api import blp
from services.evaluation.bootstrap import bootstrap
from services.evaluation.pages import pages
from shared.http import create_service_app
from shared.runtime import ServiceRuntime


def create_app(runtime: ServiceRuntime | None = None) -> Flask:
    runtime = runtime or bootstrap()
    app = create_service_app(
        runtime,
        __name__,
        api_title="Labinov evaluation",
        api_blueprints=[blp],
        page_blueprints=[pages],
        description="Innovation proposals, evaluation rounds, scores and results.",
    )
    return app
