"""RFC 9457 problem details: the one error shape of the suite, at the bottom of ``shared/``.

Every error that a Labinov process raises on purpose for a client to hear about is a :class:`Problem`: an
HTTP status, a title, a stable type slug, a detail for people, ``errors`` by field (422) and any headers the
answer needs (``Retry-After``...). The domain's refusals (:mod:`shared.errors`) and the token checks'
refusals (:class:`shared.tokens.AuthError`) are both problems, so the HTTP layer turns every one of them into
``application/problem+json`` in one handler (``shared.http``), and sets ``WWW-Authenticate`` on a 401 there,
once. This module imports nothing: domain code, workers and the web layer can all stand on it.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://labinov.example/problems/"


def slug_of(title: str) -> str:
    """The type slug a title gives when a problem names none (``"Not Found"`` → ``not-found``)."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def problem_body(
    status: int, title: str, detail: str | None = None, slug: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The JSON object of one problem; ``extra`` members that are ``None`` are left out."""
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + (slug or slug_of(title)), "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update({key: value for key, value in extra.items() if value is not None})
    return body


class Problem(Exception):
    """An error meant for the client. Subclasses set :attr:`status`, :attr:`title` and :attr:`slug`."""

    status: int = 500
    title: str = "Internal Server Error"
    slug: str | None = None

    def __init__(
        self, detail: str, errors: dict[str, list[str]] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return problem_body(self.status, self.title, self.detail, slug=self.slug, errors=self.errors)


def status_title(status: int) -> str:
    """The standard reason phrase of ``status`` (``401`` → ``Unauthorized``)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
