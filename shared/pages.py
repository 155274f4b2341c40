"""What every service's pages for people share: sign-in cookie, who may open a page, CSRF, navigation, errors.

**Signed in, in every service.** Organisers and evaluators sign in on registration's page (it owns the
accounts). What the browser keeps is the same signed access token (EdDSA JWT) the token API hands out, in the
``labinov_auth`` cookie: ``HttpOnly``, ``SameSite=Lax``, ``Secure`` when ``LABINOV_PUBLIC_URL`` is https, path
``/`` so the pages of all three services receive it, and living no longer than the token. Every service checks
it with the suite's token verifier — the very check its API makes of a bearer token — so no service has to
share a secret with registration, and an expired or forged cookie is refused the same way everywhere.

**Who may open a page.** Every page view says so, directly under its route: :func:`page_requires` (roles) or
:func:`page_public`. A visitor without a valid sign-in is sent to the sign-in page (and back afterwards); a
signed-in visitor with another role (a participant's token, an evaluator on an organiser page) gets a 403
page. ``tests/unit/test_pages.py`` holds every page route of every service to this.

**Forms.** Every form that changes something is a POST carrying a CSRF token (Flask-WTF's ``CSRFProtect``;
the JSON API blueprints are exempt: they take bearer tokens, which a browser never sends by itself). The
token lives in the service's own Flask session cookie (``labinov_<service>_session``, path ``/<service>/``),
so services with different secret keys never overwrite each other's. A POST without a valid token is a 400
page. Behind https Flask-WTF would also demand a ``Referer`` matching the host, which the suite's
``Referrer-Policy: no-referrer`` never sends; the token plus ``SameSite`` cookies are the defence instead.

**Errors for people.** A browser (``Accept: text/html``) asking for a missing page, a wrong method or
meeting a failure gets an HTML page in the suite's style with a way back; API clients keep problem+json.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, current_app, g, jsonify, redirect, render_template, request
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError, CSRFProtect

from shared.i18n import install_i18n
from shared.problems import PROBLEM_JSON, problem_body
from shared.runtime import ServiceRuntime
from shared.tokens import AuthError, Principal

AUTH_COOKIE = "labinov_auth"
SIGN_IN_PATH = "/registration/login"
ROLE_HOME = {"organiser": "/registration/admin/sessions", "evaluator": "/evaluation/"}


@dataclass(frozen=True)
class NavItem:
    """One link of the navigation bar, shown to the roles named (``anyone`` for every visitor)."""

    label: Any  # a lazy translation: rendered in the visitor's language
    href: str
    roles: tuple[str, ...]

    def shown_to(self, principal: Principal | None) -> bool:
        return "anyone" in self.roles or (principal is not None and principal.role in self.roles)


#: The suite's one navigation bar: every page of every service renders exactly this list.
NAVIGATION = (
    NavItem(_l("Sessions"), "/registration/", ("anyone",)),
    NavItem(_l("Manage sessions"), "/registration/admin/sessions", ("organiser",)),
    NavItem(_l("Announcements"), "/notification/announcements", ("organiser",)),
    NavItem(_l("Mailbox"), "/notification/mailbox", ("organiser",)),
    NavItem(_l("Evaluation"), "/evaluation/", ("organiser", "evaluator")),
)


# --- who is signed in ----------------------------------------------------------------------------------


def page_principal() -> Principal | None:
    """Who the sign-in cookie names, verified like a bearer token; ``None`` without a valid one."""
    if "page_principal" not in g:
        token = request.cookies.get(AUTH_COOKIE, "")
        principal = None
        if token:
            try:
                principal = current_app.extensions["labinov_verifier"].verify(token)
            except AuthError:
                principal = None
        g.page_principal = principal
    return g.page_principal


def sign_in_response(response: Response, token: str, lifetime_seconds: int) -> Response:
    """``response`` with the sign-in cookie holding ``token`` (see the module doc for its flags)."""
    response.set_cookie(
        AUTH_COOKIE,
        token,
        max_age=lifetime_seconds,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=current_app.config["SESSION_COOKIE_SECURE"],
    )
    return response


def sign_out_response(response: Response) -> Response:
    response.delete_cookie(
        AUTH_COOKIE, path="/", httponly=True, samesite="Lax", secure=current_app.config["SESSION_COOKIE_SECURE"]
    )
    return response


def safe_next(target: str | None, fallback: str) -> str:
    """``target`` if it is a path on this site (never another host: no open redirect), else ``fallback``."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return fallback


def page_requires(*roles: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Open the page only to signed-in visitors with one of ``roles``; others sign in first, or get 403."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = page_principal()
            if principal is None:
                here = request.full_path.rstrip("?") if request.method == "GET" else request.path
                return redirect(f"{SIGN_IN_PATH}?{urlencode({'next': here})}", 303)
            if principal.role not in roles:
                return error_page(403, detail=_l("This page is for other roles than yours."))
            g.principal = principal
            return view(*args, **kwargs)

        wrapper.labinov_roles = roles  # type: ignore[attr-defined]
        return wrapper

    return decorator


def page_public(view: Callable[..., Any]) -> Callable[..., Any]:
    """Declare that anyone may open ``view``. Every page view says either this or :func:`page_requires`."""
    view.labinov_roles = ("anyone",)  # type: ignore[attr-defined]
    return view


# --- error pages ---------------------------------------------------------------------------------------

_ERROR_TEXT = {
    400: (_l("The request could not be used"), _l("The form may have expired. Go back, reload it and try again.")),
    403: (_l("Not for you"), _l("This page is for other roles than yours.")),
    404: (_l("Page not found"), _l("There is no page at this address.")),
    405: (_l("Not allowed"), _l("This page cannot be used this way.")),
    429: (_l("Too many attempts"), _l("Wait a little and try again.")),
    500: (_l("Something went wrong"), _l("Something went wrong on our side; it was logged.")),
}


def wants_html_page() -> bool:
    """True for a browser asking for a page; API paths and API clients always get problem+json."""
    if "/api/" in request.path:
        return False
    best = request.accept_mimetypes.best_match([PROBLEM_JSON, "application/json", "text/html"])
    return best == "text/html"


def error_page(status: int, detail: Any = None, headers: dict[str, str] | None = None) -> Response:
    """An HTML error page in the suite's style, with a way back."""
    title, default_detail = _ERROR_TEXT.get(status, _ERROR_TEXT[500 if status >= 500 else 400])
    body = render_template("labinov/error.html", status=status, title=title, detail=detail or default_detail)
    response = Response(body, status=status, mimetype="text/html")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# --- installing it all ---------------------------------------------------------------------------------


def _shared_pages_blueprint(service: str) -> Blueprint:
    """Pages every service has: signing out (each service can clear the suite-wide cookie itself)."""
    shared = Blueprint(f"{service}_shared_pages", __name__)

    @shared.post("/logout")
    @page_public
    def logout():
        """Sign out: anyone may (a POST with the form's CSRF token); the sign-in cookie is cleared."""
        return sign_out_response(redirect("/registration/", 303))

    return shared


def install_pages(app: Flask, runtime: ServiceRuntime, api_blueprints: list[Blueprint]) -> None:
    """Languages, the sign-in cookie, CSRF, the navigation bar and sign-out on ``app`` (see the module doc)."""
    name = runtime.name
    secure = runtime.settings.public_url.startswith("https://")
    app.config.update(
        SESSION_COOKIE_NAME=f"labinov_{name}_session",
        SESSION_COOKIE_PATH=f"/{name}/",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
        WTF_CSRF_SSL_STRICT=False,  # see the module doc: no Referer is ever sent
    )
    install_i18n(app, runtime.settings.timezone)
    csrf = CSRFProtect(app)
    for blueprint in api_blueprints:
        csrf.exempt(blueprint)
    app.register_blueprint(_shared_pages_blueprint(name), url_prefix=f"/{name}")

    @app.errorhandler(CSRFError)
    def _csrf_refused(error: CSRFError):
        if wants_html_page():
            return error_page(
                400, detail=_l("The form has expired or was not sent from this site. Reload it and try again.")
            )
        answer = jsonify(problem_body(400, "Bad Request", error.description))  # the API's shape
        answer.status_code, answer.mimetype = 400, PROBLEM_JSON
        return answer

    @app.context_processor
    def _navigation() -> dict[str, Any]:
        principal = page_principal()
        return {
            "navigation": [item for item in NAVIGATION if item.shown_to(principal)],
            "signed_in": principal,
            "service": name,
            "sign_in_path": SIGN_IN_PATH,
        }
