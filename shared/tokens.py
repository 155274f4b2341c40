"""Signed tokens: issued by the registration service, verified everywhere else. No Flask in here.

Organiser and evaluator accounts live in the registration service. It alone holds the private key
(``LABINOV_JWT_PRIVATE_KEY``; on an embedded run one is generated into ``<data dir>/keys/`` on first use)
and signs short-lived EdDSA JWTs. The other services only verify: with ``LABINOV_JWT_PUBLIC_KEY``, with the
JWKS that registration publishes (``LABINOV_JWKS_URL``, fetched once and cached — never per request), or, on
an embedded run, with the public half of the key file in the shared data folder.

**Bounded lifetime.** A token is refused unless it says when it was issued (``iat``) and lives no longer than
its role may: ``exp - iat`` and ``exp - now`` are both at most the role's maximum. The maximum is the
configured ``LABINOV_TOKEN_LIFETIME_SECONDS`` for every role unless a mapping says otherwise (participant
links will live longer than an organiser's sign-in). So a stolen signing key, or a bug in an issuer, cannot
mint a token that opens the suite for ten years: every verifier holds the bound itself.

The HTTP side of tokens — who may call an endpoint, the bearer header — is :mod:`shared.auth`; this module
is what a worker, a command or a domain module may import without bringing in a web framework.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.config import Settings
from shared.problems import Problem, status_title

ISSUER = "labinov-registration"
AUDIENCE = "labinov"
ALGORITHM = "EdDSA"
#: The longest a participant's link may live, in every verifier: registration issues them until 30 days after
#: the session ends, never longer than this (``services.registration.rules.participant_token_lifetime``).
PARTICIPANT_TOKEN_MAX_LIFETIME_SECONDS = 400 * 24 * 3600
#: Roles whose tokens may live longer than ``LABINOV_TOKEN_LIFETIME_SECONDS``, and how long at most.
DEFAULT_MAX_LIFETIME_BY_ROLE: Mapping[str, int] = {"participant": PARTICIPANT_TOKEN_MAX_LIFETIME_SECONDS}
_PRIVATE_KEY_FILE = "jwt-private.pem"
_PUBLIC_KEY_FILE = "jwt-public.pem"


class AuthError(Problem):
    """A caller without a valid token (401), with the wrong role (403), or tokens uncheckable now (503)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = status_title(status)


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


def _load_ed25519_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"Labinov signs with Ed25519 keys; this PEM holds a {type(key).__name__}")
    return key


def _load_ed25519_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"Labinov verifies with Ed25519 keys; this PEM holds a {type(key).__name__}")
    return key


def _public_pem(private_pem: bytes) -> bytes:
    return (
        _load_ed25519_private_key(private_pem)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
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
        self._private_key = _load_ed25519_private_key(private_key_pem.encode())
        self._public_pem = self._private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = _key_id(self._public_pem)
        self.lifetime_seconds = lifetime_seconds

    def issue(self, principal: Principal, lifetime_seconds: int | None = None) -> str:
        """A signed token for ``principal``, living ``lifetime_seconds`` (default: the issuer's lifetime)."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": principal.account_id,
            "email": principal.email,
            "role": principal.role,
            "name": principal.name,
            "iat": now,
            "exp": now + (self.lifetime_seconds if lifetime_seconds is None else lifetime_seconds),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._private_key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self._private_key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": ALGORITHM})
        return {"keys": [jwk]}


class TokenVerifier:
    """Checks signature, audience, issuer, expiry and the lifetime bound of a token (see the module doc).

    ``max_lifetime_seconds`` bounds every role; ``max_lifetime_by_role`` overrides it for the roles it names
    (:meth:`from_settings` gives every service :data:`DEFAULT_MAX_LIFETIME_BY_ROLE` unless told otherwise).
    """

    def __init__(
        self,
        key_source: Callable[[str], Any],
        max_lifetime_seconds: int,
        max_lifetime_by_role: Mapping[str, int] | None = None,
    ) -> None:
        self._key_source = key_source
        self.max_lifetime_seconds = max_lifetime_seconds
        self.max_lifetime_by_role = dict(max_lifetime_by_role or {})

    @classmethod
    def from_settings(cls, settings: Settings, max_lifetime_by_role: Mapping[str, int] | None = None) -> TokenVerifier:
        """Verify with, in this order: the public key from the environment; the public half of the private
        key from the environment (registration itself); the JWKS URL; the public key file of the data folder."""
        key_source: Callable[[str], Any]
        if settings.jwt_public_key_pem:
            key = _load_ed25519_public_key(settings.jwt_public_key_pem.encode())
            key_source = lambda _token: key  # noqa: E731
        elif settings.jwt_private_key_pem:
            own = _load_ed25519_private_key(settings.jwt_private_key_pem.encode()).public_key()
            key_source = lambda _token: own  # noqa: E731
        elif settings.jwks_url:
            client = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=3600, timeout=3)
            key_source = lambda token: _key_from_jwks(client, token)  # noqa: E731
        else:
            key_source = _PublicKeyFile(settings.keys_dir / _PUBLIC_KEY_FILE)
        if max_lifetime_by_role is None:
            max_lifetime_by_role = DEFAULT_MAX_LIFETIME_BY_ROLE
        return cls(key_source, settings.token_lifetime_seconds, max_lifetime_by_role)

    def max_lifetime_of(self, role: str) -> int:
        return self.max_lifetime_by_role.get(role, self.max_lifetime_seconds)

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._key_source(token),
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "role"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "The token has expired; ask for a new one.") from None
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
            raise AuthError(401, f"The token is not valid: {exc}") from None
        self._check_lifetime(claims)
        return Principal(claims["sub"], claims.get("email", ""), claims["role"], claims.get("name"))

    def _check_lifetime(self, claims: Mapping[str, Any]) -> None:
        """PyJWT has checked that ``exp`` and ``iat`` are numbers, ``exp`` is ahead and ``iat`` is not."""
        limit = self.max_lifetime_of(str(claims["role"]))
        lifetime = claims["exp"] - claims["iat"]
        if lifetime > limit or claims["exp"] - time.time() > limit:
            raise AuthError(
                401,
                f"The token is not valid: it lives {int(lifetime)} s, longer than the {limit} s "
                f"a {claims['role']} token may; ask for a new one.",
            )


def _key_from_jwks(client: jwt.PyJWKClient, token: str) -> Any:
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
        self._loaded: tuple[float, Ed25519PublicKey] | None = None

    def __call__(self, _token: str) -> Ed25519PublicKey:
        try:
            modified = self.path.stat().st_mtime
        except FileNotFoundError:
            raise AuthError(
                503,
                f"Tokens cannot be checked yet: {self.path} does not exist. Start the registration service "
                "first, or set LABINOV_JWT_PUBLIC_KEY or LABINOV_JWKS_URL.",
            ) from None
        if self._loaded is None or self._loaded[0] != modified:
            self._loaded = (modified, _load_ed25519_public_key(self.path.read_bytes()))
        return self._loaded[1]
