"""HTTP conventions of every Labinov service, in one place.

* Every route lives under ``/<service>/``; the JSON API under ``/<service>/api/v1/`` with its OpenAPI 3
  document (generated from the marshmallow schemas by flask-smorest) at ``/<service>/api/v1/openapi.json``
  and interactive docs at ``/<service>/api/v1/docs``.
* Every error is RFC 9457 ``application/problem+json``; a 422 carries ``errors`` by field name.
* ``X-Request-ID`` is read (or made) per request, echoed on the response, put on every log line and carried
  as the correlation id into every event the request causes.
* ``/<service>/health/live``, ``/<service>/health/ready`` (database and broker) and ``/<service>/metrics``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import swagger_ui_bundle
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, send_from_directory
from flask_smorest import Api
from jinja2 import ChoiceLoader, FileSystemLoader
from marshmallow import Schema, ValidationError, fields, pre_load, validate
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector
from werkzeug.exceptions import HTTPException

from shared import db
from shared.auth import install_verifier, load_secret_key
from shared.errors import DomainError
from shared.messaging import broker
from shared.messaging.outbox import pending_summary
from shared.observability import (
    HTTP_LATENCY,
    HTTP_REQUESTS,
    configure_logging,
    new_correlation_id,
    reset_correlation_id,
    set_correlation_id,
)
from shared.runtime import ServiceRuntime

SHARED_TEMPLATES = Path(__file__).parent / "templates"
PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = 64 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
BEARER_SCHEME = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


def problem(status: int, title: str, detail: str | None = None, slug: str | None = None, **extra: Any) -> Response:
    """An RFC 9457 problem response."""
    body: dict[str, Any] = {
        "type": f"https://labinov.example/problems/{slug or _slug(title)}",
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body.update({k: v for k, v in extra.items() if v is not None})
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_JSON
    return response


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _flatten_errors(messages: Any) -> dict[str, Any]:
    """webargs nests errors by location (``{"json": {"nip": [...]}}``); clients want them by field."""
    if not isinstance(messages, dict):
        return {"_schema": messages}
    flat: dict[str, Any] = {}
    for location, by_field in messages.items():
        if isinstance(by_field, dict):
            flat.update(by_field)
        else:
            flat[location] = by_field
    return flat


class ProblemSchema(Schema):
    """RFC 9457 problem details: the one error shape of every Labinov API."""

    type = fields.Str(required=True, metadata={"description": "URI naming the kind of problem"})
    title = fields.Str(required=True)
    status = fields.Int(required=True)
    detail = fields.Str()
    errors = fields.Dict(
        keys=fields.Str(), values=fields.List(fields.Str()), metadata={"description": "by field (422)"}
    )


#: For names, titles and places: one line of text, no control characters (they end up in mail headers).
one_line = validate.Regexp(
    r"\A[^\x00-\x1f\x7f-\x9f\u2028\u2029]*\Z", error="Must be one line of text, without control characters."
)


class RequestSchema(Schema):
    """Base of every schema that reads a request: refuses text no database can store.

    A NUL character or a lone UTF-16 surrogate (``"\\ud83d"`` in JSON) is valid JSON but not storable text;
    it is refused as a 422 naming the field instead of failing deep inside the database driver.
    """

    @pre_load
    def _refuse_unstorable_text(self, data: Any, **_kwargs) -> Any:
        if isinstance(data, Mapping):  # a JSON object, or webargs' proxy of the query string
            errors = {
                key: ["Contains characters that are not allowed (NUL or broken Unicode)."]
                for key, value in data.items()
                if _unstorable(value)
            }
            if errors:
                raise ValidationError(errors)
        return data


def _unstorable(value: Any) -> bool:
    """True if ``value`` holds text no database can store (NUL, or a lone surrogate), at any depth."""
    if isinstance(value, str):
        if "\x00" in value:
            return True
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, Mapping):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable(v) for v in value)
    return False


class PageQuerySchema(RequestSchema):
    """``limit``/``offset`` of every paginated list; extend it with a list's own filters."""

    limit = fields.Int(load_default=50, validate=validate.Range(min=1, max=500))
    offset = fields.Int(load_default=0, validate=validate.Range(min=0, max=10_000_000))


class ProblemApi(Api):
    """flask-smorest's Api, answering every HTTP error as problem+json (and documenting it so)."""

    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self):
        """Document the error responses as ``application/problem+json``, which is what they are."""
        success_content_type = self.DEFAULT_RESPONSE_CONTENT_TYPE
        self.DEFAULT_RESPONSE_CONTENT_TYPE = PROBLEM_JSON
        try:
            super()._register_responses()
        finally:
            self.DEFAULT_RESPONSE_CONTENT_TYPE = success_content_type

    def handle_http_exception(self, error: HTTPException):
        data = getattr(error, "data", None) or {}
        errors = _flatten_errors(data["messages"]) if "messages" in data else None
        if error.code == 413:
            detail = f"The request body is larger than {MAX_BODY_BYTES} bytes."
        elif errors and list(errors) == ["json"]:
            detail = "The request body is not valid JSON."
        elif errors:
            detail = "Some fields are invalid: " + ", ".join(sorted(errors)) + "."
        else:
            detail = error.description
        response = problem(error.code or 500, error.name, detail, errors=errors)
        if error.code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response


def create_service_app(
    runtime: ServiceRuntime,
    import_name: str,
    api_title: str,
    api_blueprints: Iterable[Blueprint],
    page_blueprints: Iterable[Blueprint] = (),
    description: str = "",
) -> Flask:
    """The Flask app of one service, with Labinov's HTTP conventions and the token check installed."""
    name = runtime.name
    configure_logging(name, "web", runtime.settings.log_level)
    app = Flask(import_name, static_url_path=f"/{name}/static")
    app.jinja_loader = ChoiceLoader(
        [FileSystemLoader(runtime.package_dir / "templates"), FileSystemLoader(SHARED_TEMPLATES)]
    )
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        SECRET_KEY=load_secret_key(runtime.settings),
        API_TITLE=api_title,
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",  # the bundled Swagger UI 4 renders 3.0 documents
        OPENAPI_URL_PREFIX=f"/{name}/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        # the interactive docs' scripts are served from the swagger-ui-bundle package: no CDN, works offline
        OPENAPI_SWAGGER_UI_URL=f"/{name}/api/v1/docs/assets/",
        API_SPEC_OPTIONS={
            "info": {"description": description},
            "servers": [{"url": "/"}],
            "components": {"securitySchemes": {"bearerAuth": BEARER_SCHEME}},
        },
    )
    app.extensions["labinov"] = runtime
    api = ProblemApi(app)
    for blueprint in api_blueprints:
        api.register_blueprint(blueprint, url_prefix=f"/{name}/api/v1")
    for blueprint in page_blueprints:
        app.register_blueprint(blueprint, url_prefix=f"/{name}")
    app.register_blueprint(_operations_blueprint(runtime), url_prefix=f"/{name}")
    _install_request_context(app, name)
    install_verifier(app, runtime.settings)  # every service checks tokens; only registration issues them

    @app.errorhandler(DomainError)
    def _domain_error(error: DomainError):
        response = problem(error.status, error.title, error.detail, slug=error.slug, errors=error.errors)
        response.headers.update(error.headers)
        if error.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="labinov"'
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        if isinstance(error, HTTPException):
            return api.handle_http_exception(error)
        current_app.logger.exception("unhandled error")
        return problem(500, "Internal Server Error", "Something went wrong on our side; it was logged.")

    return app


def runtime_of(app: Flask | None = None) -> ServiceRuntime:
    return (app or current_app).extensions["labinov"]


def _install_request_context(app: Flask, service: str) -> None:
    @app.before_request
    def _start() -> Response | None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else new_correlation_id()
        g.correlation_token = set_correlation_id(g.request_id)
        g.started = time.perf_counter()
        if request.view_args and _unstorable(request.view_args):  # no record can have such an id
            return problem(404, "Not Found", "No resource has that identifier.")
        return None

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        HTTP_REQUESTS.labels(service, request.method, endpoint, response.status_code).inc()
        if "started" in g:
            HTTP_LATENCY.labels(service, endpoint).observe(time.perf_counter() - g.started)
        return response

    @app.teardown_request
    def _reset(_exc) -> None:
        token = g.pop("correlation_token", None)
        if token is not None:
            reset_correlation_id(token)


def _operations_blueprint(runtime: ServiceRuntime) -> Blueprint:
    """Health, metrics and the API docs' assets: public, so that load balancers and Prometheus reach them."""
    ops = Blueprint(f"{runtime.name}_operations", __name__)
    outbox_registry = CollectorRegistry()
    pending = Gauge(
        "labinov_outbox_pending",
        "Outbox rows not yet confirmed by the broker",
        ["service"],
        registry=outbox_registry,
    )
    oldest = Gauge(
        "labinov_outbox_oldest_pending_age_seconds",
        "Age of the oldest unsent outbox row",
        ["service"],
        registry=outbox_registry,
    )

    @ops.get("/api/v1/docs/assets/<path:filename>")
    def docs_assets(filename: str):
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename, max_age=86400)

    @ops.get("/health/live")
    def live():
        return jsonify(status="ok", service=runtime.name)

    @ops.get("/health/ready")
    def ready():
        checks: dict[str, str] = {}
        for check, probe in (
            ("database", lambda: db.ping(db.reading_engine(runtime.engine))),
            ("broker", lambda: broker.ping(runtime.settings.broker_url)),
        ):
            try:
                probe()
                checks[check] = "ok"
            except Exception as exc:  # the readiness answer must name the failing part, not raise
                checks[check] = f"unavailable: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        response = jsonify(status="ok" if ok else "unavailable", service=runtime.name, checks=checks)
        response.status_code = 200 if ok else 503
        return response

    @ops.get("/metrics")
    def metrics():
        count, age = pending_summary(db.reading_engine(runtime.engine), runtime.outbox)
        pending.labels(runtime.name).set(count)
        oldest.labels(runtime.name).set(age)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        else:
            registry = DEFAULT_REGISTRY
        body = generate_latest(registry) + generate_latest(outbox_registry)
        return Response(body, mimetype=CONTENT_TYPE_LATEST)

    return ops
