"""Where mail goes: a real SMTP server (``LABINOV_SMTP_URL``) or, on a local run, a Maildir under the data
folder that the notification service's mailbox page lists. Both take a standard ``EmailMessage``.

A transport opens one :meth:`~MailTransport.connection` for a batch of messages (one SMTP session, not one
per mail); a failure to connect raises from ``connection()``, a refused message raises from ``send``, and
:func:`classify_send_failure` tells the sender which kind of failure (in :mod:`.rules`' terms) a ``send``
raised — the only place that knows SMTP reply codes.
SMTP is encrypted whenever the server allows it, always with the server's certificate and host name checked,
and a password never crosses an unencrypted connection.

**One SMTP session across batches.** Opening a session costs a TCP connect, the greeting, EHLO, and with TLS
a handshake (and building an SSL context reads the system's CA store): several milliseconds, more than
sending a mail. :class:`SmtpTransport` therefore keeps its session open between batches and makes its SSL
context once. Before a batch reuses the session it asks the server with ``NOOP`` (one round trip) whether
the session is still alive — a server may have closed it while we were idle — and opens a new one if not,
so a stale session never costs a mail an attempt. After a send that broke the session (anything but a
refusal of that one mail, or a 421 "closing") the session is dropped and the next batch opens a new one.
The open session belongs to the thread that opened it (a ``threading.local``), so sender threads sharing one
transport never interleave on one socket; :meth:`close` ends the calling thread's session when its loop stops.

**Writing a mail out.** Turning an ``EmailMessage`` into bytes was the largest single share of a sender's CPU
(a quarter of it, measured with py-spy while an announcement went out): the standard policy refolds every
header from its parse tree, even the many that need no folding at all, and makes each MIME boundary by
compiling a regular expression of its own. :func:`wire_form` writes a header that is ASCII, has no control
characters and no encoded-word marker, and fits one line as it is — exactly what the refolding produces for it
(``tests/unit/test_mail_wire_format.py`` holds the two to the same bytes for the mails the service composes);
every other header gets the standard folding, except one more case: a value with no whitespace at all (a
``List-Unsubscribe`` link) cannot be folded, and the standard policy then rewrites it as RFC 2047 encoded
words, which mail programs do not decode in a URL header (RFC 2369 and RFC 8058's one-click opt-out stop
working) — such a value is written on one line too, up to RFC 5322's 998 characters. Boundaries are
``=_`` and 24 random hex digits (``=_`` never occurs in quoted-printable or base64, and the parts' text is
checked all the same), short enough that the ``Content-Type`` line needs no folding either."""

from __future__ import annotations

import mailbox
import re
import secrets
import smtplib
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from copy import copy
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.policy import EmailPolicy
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from services.notification.rules import SendFailure

Send = Callable[[EmailMessage], None]

#: The server refused this one mail and the session goes on; anything else smtplib raises is an OSError
#: about the connection (refused, timed out, dropped, TLS failed).
SMTP_REFUSALS = (
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPSenderRefused,
    smtplib.SMTPDataError,
    smtplib.SMTPNotSupportedError,
)
SMTP_CLOSING = 421  # "service not available, closing transmission channel": smtplib raises it as a refusal


_NOT_PLAIN = re.compile(r"[\x00-\x1f\x7f]|=\?")  # control characters (CR, LF, tab …) or an encoded word
_HARD_LINE_LIMIT = 998  # RFC 5322 2.1.1, without the CRLF


class _WirePolicy(EmailPolicy):
    """The standard policy, except that a header needing no folding — or one that cannot be folded — is
    written as it is (see "writing a mail out" in the module docstring)."""

    def fold_binary(self, name: str, value: str) -> bytes:
        text = str(value)
        if text.isascii() and not _NOT_PLAIN.search(text):
            length = len(name) + 2 + len(text)
            if length <= self.max_line_length or (length <= _HARD_LINE_LIMIT and " " not in text):
                return f"{name}: {text}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


def wire_form(message: EmailMessage) -> EmailMessage:
    """``message`` to be written with :class:`_WirePolicy` and its own policy's settings (a shallow copy of
    it, with a short boundary on each multipart that has none yet); a message of any other policy than the
    standard one (``compat32``, a policy of its own) stays as it is."""
    if type(message.policy) is not EmailPolicy:
        return message
    wire = copy(message)
    wire.policy = _WirePolicy(**message.policy.__dict__)
    for part in wire.walk():
        if part.is_multipart() and part.get_boundary() is None:
            part.set_boundary(_boundary_for(part))
    return wire


def _boundary_for(multipart: EmailMessage) -> str:
    texts = [leaf.get_payload() for leaf in multipart.walk() if not leaf.is_multipart()]
    while True:
        boundary = "=_" + secrets.token_hex(12)
        if not any(isinstance(text, str) and boundary in text for text in texts):
            return boundary


class MailTransport(Protocol):
    def connection(self) -> AbstractContextManager[Send]: ...

    def close(self) -> None: ...


class InsecureConnectionError(smtplib.SMTPException):
    """Credentials are configured but the connection is not encrypted, so they are not sent."""


class SmtpTransport:
    """``smtp://[user:password@]host:port`` (STARTTLS when the server offers it) or ``smtps://``.

    TLS uses :func:`ssl.create_default_context`: the system's trusted CAs and the host name of the URL.
    The session stays open across batches, one per sender thread (see the module docstring).
    """

    def __init__(self, url: str, timeout: float = 15) -> None:
        parts = urlsplit(url)
        self.secure = parts.scheme == "smtps"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (465 if self.secure else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.timeout = timeout
        self._tls: ssl.SSLContext | None = None
        self._sessions = threading.local()  # .client: this thread's open session

    @contextmanager
    def connection(self) -> Iterator[Send]:
        client = self._open_session()

        def send(message: EmailMessage) -> None:
            try:
                client.send_message(wire_form(message))
            except SMTP_REFUSALS as exc:
                if SMTP_CLOSING in _reply_codes(exc):  # the server is closing the session
                    self._drop(client)
                raise
            except BaseException:  # the session broke (or is in an unknown state): never reuse it
                self._drop(client)
                raise

        yield send

    def close(self) -> None:
        """End the open session, if any (politely: QUIT)."""
        client = getattr(self._sessions, "client", None)
        self._sessions.client = None
        if client is not None:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()

    def _open_session(self) -> smtplib.SMTP:
        """The open session if the server still answers NOOP, else a new one (connected, encrypted, logged in)."""
        client = getattr(self._sessions, "client", None)
        if client is not None:
            try:
                alive = client.noop()[0] == 250
            except (OSError, smtplib.SMTPException):
                alive = False
            if alive:
                return client
            self._drop(client)
        if self._tls is None:  # an SSL context is safe to share between threads
            self._tls = ssl.create_default_context()
        client = self._connect(self._tls)
        try:
            encrypted = self.secure or self._start_tls(client, self._tls)
            if self.username:
                if not encrypted:
                    raise InsecureConnectionError(
                        f"{self.host}:{self.port} offers no STARTTLS: refusing to send the SMTP password "
                        "unencrypted (use smtps:// or a server that offers STARTTLS)"
                    )
                client.login(self.username, self.password or "")
        except BaseException:
            client.close()
            raise
        self._sessions.client = client
        return client

    def _drop(self, client: smtplib.SMTP) -> None:
        if getattr(self._sessions, "client", None) is client:
            self._sessions.client = None
        client.close()

    def _connect(self, tls: ssl.SSLContext) -> smtplib.SMTP:
        if self.secure:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=tls)
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)

    @staticmethod
    def _start_tls(client: smtplib.SMTP, tls: ssl.SSLContext) -> bool:
        """Upgrade to TLS if the server offers it; whether the connection is now encrypted."""
        client.ehlo()
        if not client.has_extn("starttls"):
            return False
        client.starttls(context=tls)
        return True


class MaildirTransport:
    """A local Maildir: what ``make run`` uses when no SMTP server is configured."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def connection(self) -> Iterator[Send]:
        for folder in ("tmp", "new", "cur"):  # Maildir(create=True) skips these when the folder exists
            (self.path / folder).mkdir(parents=True, exist_ok=True)
        yield mailbox.Maildir(self.path, create=False).add

    def close(self) -> None:
        """Nothing stays open between batches."""

    def messages(self, limit: int = 100) -> list[EmailMessage]:
        """The newest ``limit`` messages, each read once into an ``EmailMessage``, newest first."""
        if not self.path.exists():
            return []
        box = mailbox.Maildir(self.path, create=False)
        # a Maildir key starts with its delivery time ("<seconds>.M<microseconds>P<pid>..."): no parsing needed
        newest = sorted(box.iterkeys(), key=_delivery_time, reverse=True)[:limit]
        return [message_from_bytes(box.get_bytes(key), policy=policy.default) for key in newest]


def _delivery_time(key: str) -> tuple[int, int]:
    seconds, _, rest = key.partition(".")
    microseconds = rest[1:].split("P", 1)[0] if rest.startswith("M") else "0"
    return int(seconds), int(microseconds) if microseconds.isdigit() else 0


def classify_send_failure(exc: BaseException) -> SendFailure:
    """Which kind of failure a ``send`` (or composing the mail just before it) raised.

    A refusal is the mail's own, unless its reply is 421 (the server is closing down); a recipient refused
    with a 5xx reply by every server answer is refused for good (no retry will make the mailbox exist); any other
    ``OSError`` — every other smtplib error is one — broke the connection while the mail was in flight;
    anything else (a header that cannot be encoded, say) is the mail's own fault too.
    """
    if isinstance(exc, SMTP_REFUSALS):
        codes = _reply_codes(exc)
        if SMTP_CLOSING in codes:
            return SendFailure.SERVER_UNAVAILABLE
        if isinstance(exc, smtplib.SMTPRecipientsRefused) and codes and all(500 <= code < 600 for code in codes):
            return SendFailure.PERMANENTLY_REFUSED
        return SendFailure.MAIL_REFUSED
    if isinstance(exc, OSError):
        return SendFailure.BROKEN_IN_FLIGHT
    return SendFailure.MAIL_REFUSED


def _reply_codes(exc: BaseException) -> set[int]:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return {code for code, _ in exc.recipients.values()}
    return {getattr(exc, "smtp_code", 0)}


def transport_for(smtp_url: str | None, mailbox_dir: Path) -> MailTransport:
    return SmtpTransport(smtp_url) if smtp_url else MaildirTransport(mailbox_dir)
