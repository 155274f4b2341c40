"""``Idempotency-Key`` for POSTs that create things: the same key replays the first answer.

A participant on a phone sends a registration, loses the answer on a bad network and taps again. With the
same ``Idempotency-Key`` header the second request gets the first one's answer — status and body, marked
``Idempotent-Replayed: true`` — and creates nothing.

How (one row per key in the service's ``idempotency_keys`` table, read and written by
:mod:`shared.idempotency_store`):

1. **Claim** the key: insert ``(scope, key, fingerprint)`` with no answer yet, committed at once. The primary
   key makes the claim exclusive: of two concurrent requests with one key, one runs the view and the other
   gets ``409`` *still in progress* with ``Retry-After``.
2. **Run** the view and **store** its answer on the row — any answer below 500, including a 409 or 422, so
   the retry hears the same. A 5xx releases the claim, so a retry runs again.
3. A later request with the same key in the same scope is **replayed** if its body is the same
   (same fingerprint, the SHA-256 of the body), and refused with ``422`` if it is not: a key names one
   request. Every endpoint answers alike, signed-in or not.

**Scope** — whose key it is: method, path and caller. The caller is the token's subject for a signed-in
caller, and the client's address (:func:`shared.http.client_address`, as the gateway reports it) for an
anonymous one. So one caller's answer is never replayed to another: keys of different callers never meet.
Two anonymous people behind one address (an agency's shared connection) who pick the same key share a
scope; the second then hears ``422`` for a different body — never the first one's answer — and the replay
of an identical body tells them nothing they did not send. Clients should pick random keys (a UUID).

Keys expire after :data:`~shared.idempotency_store.KEY_LIFETIME`. The one window — the process dies after
the view committed but before its answer was stored — leaves a claim without an answer; after
:data:`~shared.idempotency_store.CLAIM_TIMEOUT` a retry runs the view again, which the domain's own rules keep
harmless (the same NIP twice for a session is a ``409``, never a second registration).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, g, request

from shared.http import client_address, problem, runtime_of
from shared.idempotency_store import CLAIM_TIMEOUT, KEY_LIFETIME, claim_key, release_key, store_answer

__all__ = ["CLAIM_TIMEOUT", "HEADER", "KEY_LIFETIME", "idempotent"]

HEADER = "Idempotency-Key"
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


def idempotent(view: Callable[..., Any]) -> Callable[..., Any]:
    """Make a creating POST replay its first answer for a repeated ``Idempotency-Key`` (see module doc)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not _VALID_KEY.match(key):
            return problem(400, "Bad Request", f"{HEADER} must be 1 to 200 visible ASCII characters.")
        runtime = runtime_of()
        table = runtime.metadata.tables["idempotency_keys"]
        fingerprint = hashlib.sha256(request.get_data()).hexdigest()
        scope = _scope()

        earlier = claim_key(runtime.engine, table, scope, key, fingerprint)
        if earlier is not None:
            if earlier.fingerprint != fingerprint:
                return problem(422, "Unprocessable Entity", f"This {HEADER} was used for a different request.")
            if earlier.status is None:
                response = problem(409, "Conflict", f"A request with this {HEADER} is still in progress.")
                response.headers["Retry-After"] = "1"
                return response
            replay = Response(earlier.body, status=earlier.status, content_type=earlier.content_type)
            replay.headers["Idempotent-Replayed"] = "true"
            return replay

        try:
            response = current_app.make_response(view(*args, **kwargs))
        except Exception as exc:  # the answer is whatever the app's error handlers make of it
            response = current_app.make_response(current_app.handle_user_exception(exc))
        if response.status_code >= 500:
            release_key(runtime.engine, table, scope, key)
        else:
            store_answer(
                runtime.engine,
                table,
                scope,
                key,
                response.status_code,
                response.content_type or "",
                response.get_data(as_text=True),
            )
        return response

    wrapper._apidoc = getattr(view, "_apidoc", {})  # type: ignore[attr-defined]
    manual = wrapper._apidoc.setdefault("manual_doc", {})  # type: ignore[attr-defined]
    manual.setdefault("parameters", []).append(
        {
            "in": "header",
            "name": HEADER,
            "required": False,
            "schema": {"type": "string", "maxLength": 200},
            "description": "Send the same key again (e.g. after a lost answer) to get the first answer "
            "instead of creating a second record. A key names one request: reusing it with another body "
            "is a 422. Pick a random key (a UUID).",
        }
    )
    return wrapper


def _scope() -> str:
    """Whose key this is: method, path and caller, hashed to a fixed length (paths can be long)."""
    principal = g.get("principal")
    caller = f"account {principal.account_id}" if principal else f"client {client_address()}"
    return hashlib.sha256(f"{request.method} {request.path} {caller}".encode()).hexdigest()
