"""The development gateway: one address for the whole suite, as nginx is in docker-compose.

``/registration/``, ``/notification/`` and ``/evaluation/`` go to each service's own port unchanged
(werkzeug's ProxyMiddleware); ``/`` sends people to the participant portal.
"""

from __future__ import annotations

from flask import Flask, redirect
from werkzeug.middleware.http_proxy import ProxyMiddleware

from shared.config import SERVICES, load_settings


def create_gateway() -> Flask:
    settings = load_settings("registration")
    ports = settings.service_ports
    # the services listen on LABINOV_BIND_HOST; "all interfaces" includes this machine's loopback
    host = "127.0.0.1" if settings.bind_host in ("0.0.0.0", "::", "") else settings.bind_host
    front = Flask(__name__)

    @front.get("/")
    def home():
        return redirect("/registration/")

    front.wsgi_app = ProxyMiddleware(
        front.wsgi_app,
        {
            f"/{name}/": {"target": f"http://{host}:{ports[name]}/{name}/", "remove_prefix": True}
            for name in SERVICES
        },
    )
    return front


app = create_gateway()
