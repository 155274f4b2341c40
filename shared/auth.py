"""Who may call an endpoint: the one auth check of the suite, on top of the tokens of :mod:`shared.tokens`.

Every API endpoint states who may call it — :func:`requires` or :func:`public` — directly under its route
decorator, so the check runs before the body is even parsed. A refusal is an :class:`AuthError`, a
:class:`~shared.problems.Problem` like every other, answered by the one problem handler of ``shared.http``
(which also adds the ``WWW-Authenticate`` challenge to a 401). This module therefore knows nothing of the
HTTP layer above it.

The token names are re-exported here for the web-side code that imports them from ``shared.auth``; code
that must stay free of Flask (domain modules, workers, commands) imports them from :mod:`shared.tokens`.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, g, request

from shared.config import Settings
from shared.tokens import (
    ALGORITHM,
    AUDIENCE,
    ISSUER,
    AuthError,
    Principal,
    TokenIssuer,
    TokenVerifier,
    load_private_key_pem,
    load_secret_key,
    read_or_create_secret,
)

__all__ = [
    "ALGORITHM",
    "AUDIENCE",
    "ISSUER",
    "AuthError",
    "Principal",
    "TokenIssuer",
    "TokenVerifier",
    "current_principal",
    "install_verifier",
    "load_private_key_pem",
    "load_secret_key",
    "public",
    "read_or_create_secret",
    "requires",
    "requires_shared_secret",
]


def current_principal() -> Principal | None:
    return g.get("principal")


def requires(*roles: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Allow only callers whose verified token carries one of ``roles`` (401 without, 403 with another)."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise AuthError(401, "This endpoint needs a bearer token (POST /registration/api/v1/auth/token).")
            principal = current_app.extensions["labinov_verifier"].verify(token.strip())
            if principal.role not in roles:
                raise AuthError(403, f"This endpoint is for: {', '.join(roles)}; you are {principal.role}.")
            g.principal = principal
            return view(*args, **kwargs)

        wrapper.labinov_roles = roles  # type: ignore[attr-defined]
        _document(wrapper, view, security=[{"bearerAuth": []}], who=", ".join(roles))
        return wrapper

    return decorator


def public(view: Callable[..., Any]) -> Callable[..., Any]:
    """Declare that anyone may call ``view`` (no token). Every API view says either this or :func:`requires`."""
    view.labinov_roles = ("anyone",)  # type: ignore[attr-defined]
    _document(view, view, security=[], who="anyone, without a token")
    return view


def requires_shared_secret(
    header: str, secret_of: Callable[[Settings], str | None], caller: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Allow only another system that holds a configured shared secret — a gateway's or a mail provider's
    callback, which has no Labinov token. The secret comes in ``header`` and is compared in constant time with
    ``secret_of(settings)``; a missing or wrong one is a 401, and so is every call while none is configured.
    The OpenAPI document lists the header as an ``apiKey`` scheme of that name (added by the app factory)."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            expected = secret_of(current_app.extensions["labinov"].settings)
            given = request.headers.get(header)
            if not expected or not given or not hmac.compare_digest(given.encode(), expected.encode()):
                raise AuthError(401, f"This endpoint is for {caller}: it needs the shared secret in {header}.")
            return view(*args, **kwargs)

        wrapper.labinov_roles = ("shared secret",)  # type: ignore[attr-defined]
        wrapper.labinov_secret_header = header  # type: ignore[attr-defined]
        _document(wrapper, view, security=[{header: []}], who=f"{caller}, with the shared secret in `{header}`")
        return wrapper

    return decorator


def _document(wrapper: Any, view: Any, security: list, who: str) -> None:
    """Put who may call into the OpenAPI document (flask-smorest reads ``_apidoc``)."""
    apidoc = getattr(view, "_apidoc", {})
    wrapper._apidoc = apidoc
    manual = apidoc.setdefault("manual_doc", {})
    manual["security"] = security
    manual["description"] = f"**Who may call:** {who}."


def install_verifier(app: Flask, settings: Settings) -> None:
    """Make :func:`requires` work in ``app``; its refusals are answered by the app's one problem handler."""
    app.extensions["labinov_verifier"] = TokenVerifier.from_settings(settings)
