"""Errors a domain operation raises on purpose; the HTTP layer turns each into RFC 9457 problem+json."""

from __future__ import annotations


class DomainError(Exception):
    """A rule of the domain refused the operation. Subclasses set the HTTP status and a stable type slug."""

    status = 400
    slug = "bad-request"
    title = "The request cannot be carried out"

    def __init__(self, detail: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers: dict[str, str] = {}


class NotFound(DomainError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(DomainError):
    status = 409
    slug = "conflict"
    title = "Conflicts with the current state"


class RuleViolation(DomainError):
    status = 422
    slug = "validation-failed"
    title = "The input breaks a rule"
