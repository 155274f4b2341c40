"""Rate limits on public writes, counted in one Redis that every web process shares.

Why: anyone may register without an account, and every registration sends a confirmation mail to whatever
address was typed. A probe of the foundation sent 2,000 registrations from one client in 20 s and caused
1,992 mails. The limits below bound both: what one client address can write, and so how many mails it can
cause.

**What is limited.** A view marked :func:`public_write_limit` (registering, a participant cancelling, by API
or by form) counts each write request (not ``GET``/``HEAD``) against two limits, both keyed by
:func:`shared.http.client_address` — the caller as the gateway reports it (``ProxyFix``):

* per client address **per session** (the ``session_id`` of the URL): ``LABINOV_PUBLIC_RATE_LIMIT``,
  default ``120/minute;1000/hour``;
* per client address **across all public writes**: ``LABINOV_PUBLIC_RATE_LIMIT_PER_CLIENT``, default
  ``300/minute;3000/hour`` — it catches a client that walks over many sessions (or invents session ids).

Why these defaults: the callers who share an address are a whole agency (OPD) behind its office NAT. When a
popular sosialisasi opens, an agency's staff register in the same few minutes; 120 a minute for one session
lets two a second through from one office, so even a large agency's 500 staff get in within five minutes,
and no session needs more than 1,000 seats from one agency in an hour. A client over the limit is told when
to come back, and nothing it sent was written. A flood is bounded at 300 mails a minute per address
instead of 100 a second. ``LABINOV_PUBLIC_RATE_LIMIT=off`` turns both off (benchmarks and load tests).

**Where the counts live.** In Redis (``LABINOV_RATE_LIMIT_STORAGE_URL``; unset, the broker's Redis: on an
embedded run the embedded broker on its unix socket), never in one process's memory: with two gunicorn
workers in each of three containers, per-process counters would let a client make the limit six times over,
and a restart would forget it. Counting is Flask-Limiter on the ``limits`` library, fixed windows: each hit
is one atomic ``INCR`` (with its expiry) in Redis, so concurrent requests in any number of processes are
each counted exactly once, and none of two racing for the last place can both take it. A fixed window may
let a client make twice the limit across a window's edge; the bound on mails stays of the same order, and
the answer can say exactly when the window opens again.

**When Redis is unreachable** the writes go on: a registration rush must not stop because Redis blinked.
Each process then counts in its own memory (Flask-Limiter's in-memory fallback, with one warning in the
log), so the limit is looser — per process instead of per suite — but a flood is still bounded; the process
looks for Redis again after 1, 2, 4 … 32 s and counts there once it answers. Short socket timeouts
(:data:`STORAGE_TIMEOUT_SECONDS`) keep a Redis that does not answer from holding up a request for long.

**The answer** to a request over a limit is ``429`` ``application/problem+json`` (type ``rate-limited``),
or the suite's HTML error page for a browser, with ``Retry-After`` in seconds until the full window lets
one more through. The OpenAPI document shows the 429 on every operation the decorator marks.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from flask_limiter import Limit, Limiter, RateLimitExceeded

from shared.config import ConfigurationError, Settings
from shared.problems import PROBLEM_JSON, Problem

__all__ = ["PublicWriteLimitReached", "install_rate_limits", "public_write_limit"]

#: The attribute :func:`public_write_limit` sets on a view; the limits apply to views that carry it.
MARK = "_labinov_public_write"
#: Requests that write nothing are never counted (a session's page is a GET, its form a POST).
READING_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: How long a request may wait on Redis before the limit gives up on it (and counts in memory instead).
STORAGE_TIMEOUT_SECONDS = 0.5
STRATEGY = "fixed-window"
DEFAULT_KEY_PREFIX = "labinov"


class PublicWriteLimitReached(Problem):
    """A client address made more public writes than its limit allows; ``Retry-After`` says when to retry."""

    status = 429
    title = "Too Many Requests"
    slug = "rate-limited"


def public_write_limit(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a public view's writes as rate-limited (see the module doc) and document its 429.

    It only marks: the counting is done before the view by the limiter :func:`install_rate_limits` put on the
    app, so a request over the limit never reaches the view (nor its ``Idempotency-Key`` claim). Put it
    under the route decorator, like ``@idempotent``.
    """
    setattr(view, MARK, True)
    apidoc = getattr(view, "_apidoc", None)
    view._apidoc = apidoc = dict(apidoc or {})  # type: ignore[attr-defined]
    manual = apidoc["manual_doc"] = dict(apidoc.get("manual_doc") or {})
    responses = manual["responses"] = dict(manual.get("responses") or {})
    responses["429"] = {
        "description": "Too many public writes from this client address (for this session, or in all); "
        "nothing was written. Retry after the seconds that Retry-After says.",
        "headers": {
            "Retry-After": {
                "description": "Seconds until the limit lets this client write again",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    return view


def install_rate_limits(
    app: Flask,
    settings: Settings,
    client_address: Callable[[], str],
    key_prefix: str = DEFAULT_KEY_PREFIX,
) -> Limiter | None:
    """Count the public writes of ``app``'s marked views in the shared Redis; ``None`` when turned off.

    ``client_address`` is :func:`shared.http.client_address` (passed in, because the app factory there
    calls this). ``key_prefix`` keeps the counters of one suite (or one test) apart from another's in a
    shared Redis. Stops start-up with a :class:`~shared.config.ConfigurationError` naming the variables when
    limits are on but no shared storage is known.
    """
    if settings.public_rate_limit is None:
        return None
    if settings.rate_limit_storage_url is None:
        raise ConfigurationError(
            "public writes are rate-limited (LABINOV_PUBLIC_RATE_LIMIT), but the broker is not Redis, so the "
            "counters have nowhere to be shared: set LABINOV_RATE_LIMIT_STORAGE_URL to a Redis every web "
            "process reaches (redis://host:6379/0), or LABINOV_PUBLIC_RATE_LIMIT=off"
        )

    def per_session_key() -> str:
        return f"{client_address() or 'unknown'}|{_session_of_request()}"

    limits = [
        Limit(
            settings.public_rate_limit,
            key_function=per_session_key,
            scope="public-writes-per-session",
            shared=True,
            exempt_when=lambda: not (_is_public_write() and _session_of_request()),
            error_message="Too many registrations from your address for this session",
        )
    ]
    if settings.public_rate_limit_per_client:
        limits.append(
            Limit(
                settings.public_rate_limit_per_client,
                key_function=lambda: client_address() or "unknown",
                scope="public-writes",
                shared=True,
                exempt_when=lambda: not _is_public_write(),
                error_message="Too many registrations and cancellations from your address",
            )
        )
    # redis-py takes fractional seconds, whatever Flask-Limiter's annotation says
    storage_options: dict[str, Any] = {
        "socket_timeout": STORAGE_TIMEOUT_SECONDS,
        "socket_connect_timeout": STORAGE_TIMEOUT_SECONDS,
    }
    limiter = Limiter(
        key_func=lambda: client_address() or "unknown",
        app=app,
        default_limits=limits,  # type: ignore[arg-type]  # Limit objects are accepted alongside strings
        storage_uri=settings.rate_limit_storage_url,
        storage_options=storage_options,
        strategy=STRATEGY,
        key_prefix=key_prefix,
        headers_enabled=False,  # no X-RateLimit-* on every answer (a Redis read each); Retry-After on a 429
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )

    @app.errorhandler(RateLimitExceeded)
    def _limit_reached(error: RateLimitExceeded) -> Response:
        retry_after = _seconds_until_retry(limiter, error)
        refusal = PublicWriteLimitReached(
            f"{error.description}: at most {error.limit.limit}. Nothing was written; try again in "
            f"{retry_after} second{'s' if retry_after != 1 else ''}.",
            headers={"Retry-After": str(retry_after)},
        )
        try:  # the app's own handler for problems answers it: problem+json, or the HTML page for a browser
            return current_app.make_response(current_app.handle_user_exception(refusal))
        except Exception:  # an app without one (a bare Flask app; Flask re-raises) still answers problem+json
            response = jsonify(refusal.body())
            response.status_code = refusal.status
            response.mimetype = PROBLEM_JSON
            response.headers.update(refusal.headers)
            return response

    return limiter


def _is_public_write() -> bool:
    """Whether this request is a write to a view marked :func:`public_write_limit`."""
    if request.method in READING_METHODS:
        return False
    view = current_app.view_functions.get(request.endpoint or "")
    return bool(getattr(view, MARK, False))


def _session_of_request() -> str:
    """The session id of the URL (hashed when long: it is the caller's text, and it ends up in a Redis key)."""
    session_id = str((request.view_args or {}).get("session_id") or "")
    if len(session_id) > 64:
        return hashlib.sha256(session_id.encode()).hexdigest()
    return session_id


def _seconds_until_retry(limiter: Limiter, error: RateLimitExceeded) -> int:
    """Whole seconds until the breached window lets one more through (at least 1)."""
    breached = limiter.current_limit
    try:
        if breached is not None:
            return max(1, math.ceil(breached.reset_at - time.time()))
    except Exception:  # the storage went away between the count and this question: say the whole window
        pass
    return max(1, int(error.limit.limit.get_expiry()))
