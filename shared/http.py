"""HTTP conventions of every Labinov service, in one place.

* Every route lives under ``/<service>/``; the JSON API under ``/<service>/api/v1/`` with its OpenAPI 3
  document (generated from the marshmallow schemas by flask-smorest) at ``/<service>/api/v1/openapi.json``
  and interactive docs at ``/<service>/api/v1/docs``.
* Every error is RFC 9457 ``application/problem+json``; a 422 carries ``errors`` by field name.
* ``X-Request-ID`` is read (or made) per request, echoed on the response, put on every log line and carried
  as the correlation id into every event the request causes.
* ``/<service>/health/live``, ``/<service>/health/ready`` (database and broker) and ``/<service>/metrics``.
* A request body that is JSON is read once before any view (:func:`_refuse_unreadable_json`): JSON nested
  deeper than :data:`MAX_JSON_DEPTH` or holding an integer of more than :data:`MAX_NUMBER_DIGITS` digits is
  a 400 for every endpoint at once, never a ``RecursionError`` or ``ValueError`` deep in a parser (500).
* Security headers on every answer, set here only (:data:`SECURITY_HEADERS`): a Content-Security-Policy
  that allows no inline script (the API docs start Swagger UI from a file), no framing, no MIME sniffing,
  no referrer (participants' links carry tokens). API answers are ``Cache-Control: no-store`` unless a view
  says otherwise: they carry tokens and personal data.
* Behind the gateway, ``request.remote_addr`` is the gateway for everyone; werkzeug's ``ProxyFix`` takes the
  client's address from the last ``LABINOV_TRUSTED_PROXY_HOPS`` entries of ``X-Forwarded-For``, which the
  gateway appends to. :func:`client_address` is the address per-client limits count by. A service's own
  port must then not be reachable by clients, who could name any address there.
"""

from __future__ import annotations

import json
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
from werkzeug.middleware.proxy_fix import ProxyFix

from shared import db
from shared.auth import install_verifier
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
from shared.pages import error_page, install_pages, wants_html_page
from shared.problems import PROBLEM_JSON, Problem, problem_body
from shared.ratelimit import install_rate_limits
from shared.runtime import ServiceRuntime
from shared.tokens import load_secret_key

SHARED_TEMPLATES = Path(__file__).parent / "templates"
SHARED_STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 64 * 1024
#: JSON nested deeper than this is refused: no Labinov request needs more than a few levels.
MAX_JSON_DEPTH = 32
#: Integers with more digits are refused: no field holds one, and Python refuses past 4,300 digits anyway.
MAX_NUMBER_DIGITS = 100
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
BEARER_SCHEME = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
BEARER_CHALLENGE = 'Bearer realm="labinov"'
#: The file that starts Swagger UI on the docs page (see ``templates/swagger_ui.html``).
DOCS_STARTER = "labinov-docs.js"

#: Sent with every answer of every service. Styles may be inline (the pages use ``style=`` attributes, which
#: run no code); scripts only from the service itself, never inline.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def problem(status: int, title: str, detail: str | None = None, slug: str | None = None, **extra: Any) -> Response:
    """An RFC 9457 problem response; a 401 carries the bearer challenge (this is the one place that sets it)."""
    response = jsonify(problem_body(status, title, detail, slug=slug, **extra))
    response.status_code = status
    response.mimetype = PROBLEM_JSON
    if status == 401:
        response.headers["WWW-Authenticate"] = BEARER_CHALLENGE
    return response


def problem_response(error: Problem) -> Response:
    """The answer to any :class:`~shared.problems.Problem` — a domain error and an auth error alike."""
    response = problem(error.status, error.title, error.detail, slug=error.slug, errors=error.errors)
    for name, value in error.headers.items():
        response.headers.setdefault(name, value)
    return response


def client_address() -> str:
    """The caller's address: behind the gateway, the one it appended to ``X-Forwarded-For`` (``ProxyFix``)."""
    return request.remote_addr or ""


def _flatten_errors(messages: Any) -> dict[str, Any]:
    """webargs nests errors by location (``{"json": {"nip": [...]}}``); clients want them by field, each a list
    of sentences — a nested schema's under a dotted name (``members.name``), a list item's under its list's."""
    if not isinstance(messages, dict):
        return {"_schema": messages}
    flat: dict[str, Any] = {}
    for location, by_field in messages.items():
        if isinstance(by_field, dict):
            for field, errors in by_field.items():
                _flatten_into(flat, str(field), errors)
        else:
            flat[location] = by_field
    return flat


def _flatten_into(flat: dict[str, Any], path: str, errors: Any) -> None:
    if not isinstance(errors, dict):
        flat.setdefault(path, []).extend(errors if isinstance(errors, list) else [str(errors)])
        return
    for key, inner in errors.items():
        # a list item's errors, and a nested schema's own (``_schema``, or named after the field itself),
        # belong to the field
        belongs = isinstance(key, int) or str(key) in ("_schema", path.rsplit(".", 1)[-1])
        _flatten_into(flat, path if belongs else f"{path}.{key}", inner)


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

    def handle_http_exception(self, error: HTTPException) -> Response:
        if wants_html_page():  # a browser asking for a page: the suite's error page, with a way back
            response = error_page(error.code or 500)
            allowed = getattr(error, "valid_methods", None)
            if error.code == 405 and allowed:
                response.headers["Allow"] = ", ".join(allowed)
            return response
        data = getattr(error, "data", None) or {}
        errors = _flatten_errors(data["messages"]) if "messages" in data else None
        detail: str | None
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
    # the pages' style sheet and scripts: the same files in every service, under /<service>/static/
    app = Flask(import_name, static_url_path=f"/{name}/static", static_folder=SHARED_STATIC)
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
        # null: no badge from the public validator (which could not reach this document, and the CSP forbids)
        OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None},
    )
    app.extensions["labinov"] = runtime
    if runtime.settings.trusted_proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=runtime.settings.trusted_proxy_hops)  # type: ignore[method-assign]
    api = ProblemApi(app)
    api_blueprints = list(api_blueprints)
    for blueprint in api_blueprints:
        api.register_blueprint(blueprint, url_prefix=f"/{name}/api/v1")
    secret_headers: set[str] = {
        view.labinov_secret_header for view in app.view_functions.values() if hasattr(view, "labinov_secret_header")
    }
    for header in sorted(secret_headers):  # endpoints for other systems (shared.auth.requires_shared_secret)
        api.spec.components.security_scheme(header, {"type": "apiKey", "in": "header", "name": header})
    install_pages(app, runtime, api_blueprints)  # languages, sign-in cookie, CSRF (APIs exempt), navigation
    for blueprint in page_blueprints:
        app.register_blueprint(blueprint, url_prefix=f"/{name}")
    app.register_blueprint(_operations_blueprint(runtime), url_prefix=f"/{name}")
    _install_request_context(app, name)
    install_rate_limits(app, runtime.settings, client_address)  # public writes (shared/ratelimit.py)
    install_verifier(app, runtime.settings)  # every service checks tokens; only registration issues them

    @app.errorhandler(Problem)
    def _problem(error: Problem) -> Response:  # domain and auth errors: one shape, one handler
        if wants_html_page():
            return error_page(error.status, detail=error.detail, headers=error.headers)
        return problem_response(error)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        if isinstance(error, HTTPException):
            return api.handle_http_exception(error)
        current_app.logger.exception("unhandled error")
        if wants_html_page():
            return error_page(500)
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
        return _refuse_unreadable_json()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        if (request.blueprint or "").endswith("_api"):  # an API operation's answer (not its docs)
            response.headers.setdefault("Cache-Control", "no-store")
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


class _UnreadableJson(ValueError):
    """The body is JSON, but more than a service should ever have to read."""


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _UnreadableJson(f"a number has more than {MAX_NUMBER_DIGITS} digits")
    return int(digits)


def _nests_deeper_than(value: Any, limit: int) -> bool:
    """True if ``value`` has arrays or objects more than ``limit`` levels deep (iterative: no recursion)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def _refuse_unreadable_json() -> Response | None:
    """Read a JSON body once, bounded, before any view or parser does (see the module doc).

    Malformed JSON is left to the views' parser, which answers it as before; this refuses only what parses
    but would break a parser or the code after it: deep nesting and huge integers.
    """
    if not request.is_json:
        return None
    raw = request.get_data(cache=True)  # a body over MAX_BODY_BYTES is a 413 here already
    try:
        text = raw.decode("utf-8")
        if not text.strip():
            return None
        document = json.loads(text, parse_int=_bounded_int)
    except _UnreadableJson as exc:
        reason = str(exc)
    except RecursionError:
        reason = f"it nests deeper than {MAX_JSON_DEPTH} levels"
    except ValueError:  # malformed JSON (JSONDecodeError) or not UTF-8: the parser's usual 400
        return None
    else:
        if not _nests_deeper_than(document, MAX_JSON_DEPTH):
            return None
        reason = f"it nests deeper than {MAX_JSON_DEPTH} levels"
    return problem(
        400, "Bad Request", f"The request body is not valid JSON for this API: {reason}.", errors={"json": [reason]}
    )


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
        if filename == DOCS_STARTER:  # ours, next to Swagger UI's own files; changes with the code
            return send_from_directory(SHARED_STATIC, filename, max_age=0)
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename, max_age=86400)

    @ops.get("/health/live")
    def live():
        return jsonify(status="ok", service=runtime.name)

    @ops.get("/health/ready")
    def ready() -> Response:
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
