"""``Idempotency-Key`` for POSTs that create things: the same key replays the first answer.

A participant on a phone sends a registration, loses the answer on a bad network and taps again. With the
same ``Idempotency-Key`` header the second request gets the first one's answer — status and body, marked
``Idempotent-Replayed: true`` — and creates nothing.

How (one row per key in the service's ``idempotency_keys`` table):

1. **Claim** the key: insert ``(scope, key, fingerprint)`` with no answer yet, committed at once. The primary
   key makes the claim exclusive: of two concurrent requests with one key, one runs the view and the other
   gets ``409`` *still in progress* with ``Retry-After``.
2. **Run** the view and **store** its answer on the row — any answer below 500, including a 409 or 422, so
   the retry hears the same. A 5xx releases the claim, so a retry runs again.
3. A later request with the same key and the same body is **replayed**; from a signed-in caller with a
   different body it is refused (``422``): a key names one request. (Anonymous callers' scope includes the
   body, so for them a different body is simply a different request.)

Scope: method, path and caller (the token's subject; for anonymous callers, the request body), so keys of
different callers never meet. Keys expire after :data:`KEY_LIFETIME`. The one window — the process dies after the view committed
but before its answer was stored — leaves a claim without an answer; after :data:`CLAIM_TIMEOUT` a retry
runs the view again, which the domain's own rules keep harmless (the same NIP twice for a session is a
``409``, never a second registration).
"""

from __future__ import annotations

import functools
import hashlib
import re
from datetime import timedelta

from flask import Response, current_app, g, request
from sqlalchemy import (
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from shared.clock import utcnow
from shared.http import problem, runtime_of

HEADER = "Idempotency-Key"
KEY_LIFETIME = timedelta(hours=24)
CLAIM_TIMEOUT = timedelta(seconds=60)
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


def idempotent(view):
    """Make a creating POST replay its first answer for a repeated ``Idempotency-Key`` (see module doc)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not _VALID_KEY.match(key):
            return problem(400, "Bad Request", f"{HEADER} must be 1 to 200 visible ASCII characters.")
        runtime = runtime_of()
        table = runtime.metadata.tables["idempotency_keys"]
        fingerprint = hashlib.sha256(request.get_data()).hexdigest()
        scope = _scope(fingerprint)

        earlier = _claim(runtime.engine, table, scope, key, fingerprint)
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
        _settle(runtime.engine, table, scope, key, response)
        return response

    wrapper._apidoc = getattr(view, "_apidoc", {})
    manual = wrapper._apidoc.setdefault("manual_doc", {})
    manual.setdefault("parameters", []).append(
        {
            "in": "header",
            "name": HEADER,
            "required": False,
            "schema": {"type": "string", "maxLength": 200},
            "description": "Send the same key again (e.g. after a lost answer) to get the first answer "
            "instead of creating a second record.",
        }
    )
    return wrapper


def _scope(fingerprint: str) -> str:
    """Whose key this is: method, path and caller, hashed to a fixed length (paths can be long).

    Anonymous callers cannot be told apart, so for them the request itself is part of the scope: two
    participants who happen to pick the same key never see each other's answers.
    """
    principal = g.get("principal")
    caller = principal.account_id if principal else f"anonymous {fingerprint}"
    return hashlib.sha256(f"{request.method} {request.path} {caller}".encode()).hexdigest()


def _claim(engine, table: Table, scope: str, key: str, fingerprint: str):
    """Claim the key; returns ``None`` if this request now holds it, else the earlier request's row."""
    c = table.c
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(
            delete(table).where(
                c.scope == scope,
                c.key == key,
                (c.created_at < now - KEY_LIFETIME) | (c.status.is_(None) & (c.created_at < now - CLAIM_TIMEOUT)),
            )
        )
    for _ in range(3):  # the earlier row may be released and vanish between our insert and our read
        try:
            with engine.begin() as connection:
                connection.execute(insert(table).values(scope=scope, key=key, fingerprint=fingerprint, created_at=now))
            return None
        except IntegrityError:
            with engine.connect() as connection:
                earlier = connection.execute(select(table).where(c.scope == scope, c.key == key)).first()
            if earlier is not None:
                return earlier
    raise RuntimeError(f"could not claim {HEADER} {key!r}: it keeps appearing and vanishing")


def _settle(engine, table: Table, scope: str, key: str, response: Response) -> None:
    """Store the answer for replays, or release the claim after a server error so a retry runs again."""
    c = table.c
    where = (c.scope == scope) & (c.key == key)
    with engine.begin() as connection:
        if response.status_code >= 500:
            connection.execute(delete(table).where(where))
        else:
            connection.execute(
                update(table)
                .where(where)
                .values(
                    status=response.status_code,
                    content_type=response.content_type,
                    body=response.get_data(as_text=True),
                )
            )
