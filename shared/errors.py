"""Errors a domain operation raises on purpose; each is a :class:`~shared.problems.Problem`, which the HTTP
layer turns into RFC 9457 problem+json (and a command-line tool prints as its ``detail``)."""

from __future__ import annotations

from shared.problems import Problem


class DomainError(Problem):
    """A rule of the domain refused the operation. Subclasses set the HTTP status and a stable type slug."""

    status = 400
    slug = "bad-request"
    title = "The request cannot be carried out"


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
