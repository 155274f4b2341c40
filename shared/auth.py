"""Signed tokens: issued by the registration service, verified everywhere else.

Organiser and evaluator accounts live in the registration service. It alone holds the private key
(``LABINOV_JWT_PRIVATE_KEY``; on an embedded run one is generated into ``<data dir>/keys/`` on first use)
and signs short-lived EdDSA JWTs. The other services only verify: with ``LABINOV_JWT_PUBLIC_KEY``, with the
JWKS that registration publishes (``LABINOV_JWKS_URL``, fetched once and cached — never per request), or, on
an embedded run, with the public half of the key file in the shared data folder.

Every API endpoint states who may call it — :func:`requires` (the one auth check of the suite) or
:func:`public` — directly under its route decorator, so the check runs before the body is even parsed.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import current_app, g, request

from shared.config import Settings

ISSUER = "labinov-registration"
AUDIENCE = "labinov"
ALGORITHM = "EdDSA"
ROLES = ("organiser", "evaluator")
_PRIVATE_KEY_FILE = "jwt-private.pem"
_PUBLIC_KEY_FILE = "jwt-public.pem"


class AuthError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Principal:
    """Who is calling: the account id, e-mail and role from a verified token."""

    account_id: str
    email: str
    role: str
    name: str | None = None


def load_private_key_pem(settings: Settings) -> str:
    """The signing key: from the environment, or created once in the data folder (embedded runs) together
    with its public half, which the other services of that data folder verify with."""
    if settings.jwt_private_key_pem:
        return settings.jwt_private_key_pem
    private_pem = read_or_create_secret(
        settings.keys_dir / _PRIVATE_KEY_FILE,
        lambda: Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    _publish_public_half(settings.keys_dir / _PUBLIC_KEY_FILE, _public_pem(private_pem))
    return private_pem.decode()


def _publish_public_half(path: Path, public_pem: bytes) -> None:
    """Keep the public key file in step with the private key (a replaced key replaces it, atomically)."""
    if path.exists() and path.read_bytes() == public_pem:
        return
    draft = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    draft.write_bytes(public_pem)
    os.replace(draft, path)


def _public_pem(private_pem: bytes) -> bytes:
    private = serialization.load_pem_private_key(private_pem, password=None)
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_secret_key(settings: Settings) -> bytes:
    """Flask's secret key: from the environment, or created once in the data folder (embedded runs), so that
    every process of a service signs sessions and CSRF tokens alike."""
    if settings.secret_key:
        return settings.secret_key.encode()
    return read_or_create_secret(settings.keys_dir / "flask-secret-key", lambda: secrets.token_bytes(32))


def read_or_create_secret(path: Path, make: Callable[[], bytes]) -> bytes:
    """The secret in ``path``, made by ``make`` and stored (mode 0600) if there is none yet.

    Written completely under a private name, then linked into place: of several processes starting at once
    exactly one secret wins (``link`` fails if the name exists), and nobody ever reads a half-written file.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(make())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_bytes()


def _key_id(public_pem: bytes) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, public_pem.decode()).hex[:16]


class TokenIssuer:
    def __init__(self, private_key_pem: str, lifetime_seconds: int) -> None:
        self._private_key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        self._public_pem = self._private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = _key_id(self._public_pem)
        self.lifetime_seconds = lifetime_seconds

    def issue(self, principal: Principal) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": principal.account_id,
            "email": principal.email,
            "role": principal.role,
            "name": principal.name,
            "iat": now,
            "exp": now + self.lifetime_seconds,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._private_key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self._private_key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": ALGORITHM})
        return {"keys": [jwk]}


class TokenVerifier:
    def __init__(self, key_source: Callable[[str], Any]) -> None:
        self._key_source = key_source

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        """Verify with, in this order: the public key from the environment; the public half of the private
        key from the environment (registration itself); the JWKS URL; the public key file of the data folder."""
        if settings.jwt_public_key_pem:
            key = serialization.load_pem_public_key(settings.jwt_public_key_pem.encode())
            return cls(lambda _token: key)
        if settings.jwt_private_key_pem:
            own = serialization.load_pem_private_key(settings.jwt_private_key_pem.encode(), password=None)
            return cls(lambda _token: own.public_key())
        if settings.jwks_url:
            client = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=3600, timeout=3)
            return cls(lambda token: _key_from_jwks(client, token))
        return cls(_PublicKeyFile(settings.keys_dir / _PUBLIC_KEY_FILE))

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._key_source(token),
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "sub", "role"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "The token has expired; ask for a new one.") from None
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
            raise AuthError(401, f"The token is not valid: {exc}") from None
        return Principal(claims["sub"], claims.get("email", ""), claims["role"], claims.get("name"))


def _key_from_jwks(client: jwt.PyJWKClient, token: str):
    try:
        return client.get_signing_key_from_jwt(token).key
    except jwt.PyJWKClientConnectionError as exc:  # registration unreachable: our problem, not the caller's
        raise AuthError(503, f"Tokens cannot be checked right now (the key service is unreachable): {exc}") from None


class _PublicKeyFile:
    """Embedded runs: the public key registration wrote into the shared data folder, read again whenever the
    file changes (a replaced key). Verifiers only read it; they never make a key of their own, so a missing key
    is an honest 503, never a silent mismatch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._loaded: tuple[float, Any] | None = None

    def __call__(self, _token: str):
        try:
            modified = self.path.stat().st_mtime
        except FileNotFoundError:
            raise AuthError(
                503,
                f"Tokens cannot be checked yet: {self.path} does not exist. Start the registration service "
                "first, or set LABINOV_JWT_PUBLIC_KEY or LABINOV_JWKS_URL.",
            ) from None
        if self._loaded is None or self._loaded[0] != modified:
            self._loaded = (modified, serialization.load_pem_public_key(self.path.read_bytes()))
        return self._loaded[1]


def current_principal() -> Principal | None:
    return g.get("principal")


def requires(*roles: str):
    """Allow only callers whose verified token carries one of ``roles`` (401 without, 403 with another)."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise AuthError(401, "This endpoint needs a bearer token (POST /registration/api/v1/auth/token).")
            principal = current_app.extensions["labinov_verifier"].verify(token.strip())
            if principal.role not in roles:
                raise AuthError(403, f"This endpoint is for: {', '.join(roles)}; you are {principal.role}.")
            g.principal = principal
            return view(*args, **kwargs)

        wrapper.labinov_roles = roles
        _document(wrapper, view, security=[{"bearerAuth": []}], who=", ".join(roles))
        return wrapper

    return decorator


def public(view):
    """Declare that anyone may call ``view`` (no token). Every API view says either this or :func:`requires`."""
    view.labinov_roles = ("anyone",)
    _document(view, view, security=[], who="anyone, without a token")
    return view


def _document(wrapper, view, security: list, who: str) -> None:
    """Put who may call into the OpenAPI document (flask-smorest reads ``_apidoc``)."""
    apidoc = getattr(view, "_apidoc", {})
    wrapper._apidoc = apidoc
    manual = apidoc.setdefault("manual_doc", {})
    manual["security"] = security
    manual["description"] = f"**Who may call:** {who}."


def install_verifier(app, settings: Settings) -> None:
    """Make :func:`requires` work in ``app`` and answer auth failures as problem+json."""
    from shared.http import problem

    app.extensions["labinov_verifier"] = TokenVerifier.from_settings(settings)

    @app.errorhandler(AuthError)
    def _auth_error(error: AuthError):
        response = problem(error.status, HTTPStatus(error.status).phrase, error.detail)
        if error.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="labinov"'
        return response
