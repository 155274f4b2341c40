"""The development gateway: one address for the whole suite, as nginx is in docker-compose.

``/registration/``, ``/notification/`` and ``/evaluation/`` go to each service's own port unchanged
(werkzeug's ProxyMiddleware); ``/`` sends people to the participant portal, and a service's bare prefix
(``/registration``, ``/evaluation``) to its pages (``/registration/``). Like nginx, the gateway

* appends the caller's address to ``X-Forwarded-For`` (ProxyMiddleware passes the header on untouched), so
  a service — which trusts the last ``LABINOV_TRUSTED_PROXY_HOPS`` entries — counts per-client limits by the
  real caller, and a caller cannot pretend to be another address by sending the header itself;
* refuses a body larger than the services accept with the same ``413`` problem+json they give. A service
  answers 413 without reading the body and closes the connection; a proxy still sending megabytes then
  breaks off and could only answer 502.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

from flask import Flask, abort, redirect
from werkzeug.middleware.http_proxy import ProxyMiddleware
from werkzeug.wsgi import get_input_stream

from shared.config import SERVICES, load_settings
from shared.http import MAX_BODY_BYTES, SECURITY_HEADERS
from shared.problems import PROBLEM_JSON, problem_body

WsgiApp = Any


class GatewayFront:
    """WSGI middleware in front of the proxy: the body limit and ``X-Forwarded-For`` (see the module doc)."""

    def __init__(self, app: WsgiApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if self._body_too_large(environ):
            _discard_body(environ)
            return self._too_large(start_response)
        caller = environ.get("REMOTE_ADDR") or "unknown"
        earlier = environ.get("HTTP_X_FORWARDED_FOR")
        environ["HTTP_X_FORWARDED_FOR"] = f"{earlier}, {caller}" if earlier else caller
        return self.app(environ, start_response)

    def _body_too_large(self, environ: dict[str, Any]) -> bool:
        declared = environ.get("CONTENT_LENGTH")
        if declared:
            try:
                return int(declared) > self.max_body_bytes
            except ValueError:
                return False  # the service answers a malformed length itself
        if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return False
        # A chunked body has no length up front: read at most one byte past the limit, and pass on what
        # was read with its length, so the service never sees a body it would refuse half-way.
        body = get_input_stream(environ, max_content_length=None).read(self.max_body_bytes + 1)
        if len(body) > self.max_body_bytes:
            return True
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return False

    def _too_large(self, start_response: Any) -> list[bytes]:
        body = problem_body(
            413, "Request Entity Too Large", f"The request body is larger than {self.max_body_bytes} bytes."
        )
        payload = json.dumps(body).encode()
        headers = [("Content-Type", PROBLEM_JSON), ("Content-Length", str(len(payload))), ("Connection", "close")]
        start_response("413 Request Entity Too Large", headers + list(SECURITY_HEADERS.items()))
        return [payload]


#: Read and thrown away after a refusal, so the caller is not cut off mid-send (and never sees the answer).
DISCARD_AT_MOST_BYTES = 64 * 1024 * 1024


def _discard_body(environ: dict[str, Any]) -> None:
    """Read the rest of a refused body (as nginx's lingering close does), up to a bound."""
    stream = environ["wsgi.input"]
    discarded = 0
    while discarded < DISCARD_AT_MOST_BYTES:
        chunk = stream.read(64 * 1024)
        if not chunk:
            return
        discarded += len(chunk)


def create_gateway() -> Flask:
    settings = load_settings("registration")
    ports = settings.service_ports
    # the services listen on LABINOV_BIND_HOST; "all interfaces" includes this machine's loopback
    host = "127.0.0.1" if settings.bind_host in ("0.0.0.0", "::", "") else settings.bind_host
    front = Flask(__name__)

    @front.get("/")
    def home():
        return redirect("/registration/")

    @front.get("/<service>")
    def bare_prefix(service: str):
        """``/registration`` → ``/registration/`` (the proxy only matches the prefix with its slash)."""
        if service not in SERVICES:
            abort(404)
        return redirect(f"/{service}/", 308)

    proxy = ProxyMiddleware(
        front.wsgi_app,
        {f"/{name}/": {"target": f"http://{host}:{ports[name]}/{name}/", "remove_prefix": True} for name in SERVICES},
    )
    front.wsgi_app = GatewayFront(proxy)  # type: ignore[method-assign]
    return front


app = create_gateway()
