"""Configuration of every Labinov process, read once from the environment.

Every value has an embedded default so that ``make run`` works on a fresh machine with no servers:
SQLite files and an embedded Redis broker under the data folder. An invalid value stops the process at
start-up with an error that names the variable, instead of failing later on the first request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SERVICES = ("registration", "notification", "evaluation")


BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "redis", "rediss", "redis+socket", "memory")
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")
RATE_LIMIT_STORAGE_SCHEMES = ("redis", "rediss", "redis+unix")
#: Generous enough for a whole agency registering from one office NAT (see ``shared/ratelimit.py``).
DEFAULT_PUBLIC_RATE_LIMIT = "120/minute;1000/hour"
DEFAULT_PUBLIC_RATE_LIMIT_PER_CLIENT = "300/minute;3000/hour"


#: Every variable Labinov reads, with what it means. The README's table and the docker-compose check in
#: the tests are held against this list.
ENVIRONMENT_VARIABLES: dict[str, str] = {
    "LABINOV_PORT": "the one address of the suite (gateway); default 8000",
    "LABINOV_REGISTRATION_PORT": "registration's own port; default LABINOV_PORT+1",
    "LABINOV_NOTIFICATION_PORT": "notification's own port; default LABINOV_PORT+2",
    "LABINOV_EVALUATION_PORT": "evaluation's own port; default LABINOV_PORT+3",
    "LABINOV_BIND_HOST": "the interface web processes listen on; default 127.0.0.1 (this machine only)",
    "LABINOV_DATA_DIR": "SQLite files, embedded broker, keys, local mailbox; default ./var",
    "LABINOV_BROKER_URL": "amqp://... (RabbitMQ), redis://..., memory://; unset = embedded Redis",
    "LABINOV_REGISTRATION_DATABASE_URL": "postgresql://... ; unset = SQLite under the data folder",
    "LABINOV_NOTIFICATION_DATABASE_URL": "postgresql://... ; unset = SQLite under the data folder",
    "LABINOV_EVALUATION_DATABASE_URL": "postgresql://... ; unset = SQLite under the data folder",
    "LABINOV_SMTP_URL": "smtp://[user:pass@]host:port or smtps://...; unset = local mailbox",
    "LABINOV_MAIL_FROM": "sender of outgoing mail",
    "LABINOV_MAIL_HOURLY_CAP": "messages one address may get per clock hour from public causes (registrations "
    "anyone may type); the rest is held back for organisers to see; default 10",
    "LABINOV_SECRET_KEY": "signs form sessions and CSRF tokens; unset = generated once into the data folder",
    "LABINOV_JWT_PRIVATE_KEY": "PEM Ed25519 key that signs tokens (registration); unset = generated in data folder",
    "LABINOV_JWT_PUBLIC_KEY": "PEM public key that verifies tokens (other services)",
    "LABINOV_JWKS_URL": "where to fetch the verifying keys instead (registration's /auth/jwks.json)",
    "LABINOV_TOKEN_LIFETIME_SECONDS": "how long a token is valid (60 s to 7 days); default 3600. Every service "
    "refuses tokens that live longer, so give all of them the same value",
    "LABINOV_MAX_HANDLER_ATTEMPTS": "attempts of an event handler before its message is dead-lettered; default 5",
    "LABINOV_MAX_DELIVERY_ATTEMPTS": "the old name of LABINOV_MAX_HANDLER_ATTEMPTS, still read when that is unset",
    "LABINOV_PUBLIC_URL": "the address people open (links in mail); default http://127.0.0.1:LABINOV_PORT",
    "LABINOV_LOG_LEVEL": "DEBUG, INFO, WARNING...; default INFO",
    "LABINOV_TIMEZONE": "the programme's time zone (IANA name) in which people see times; default Asia/Makassar",
    "LABINOV_TRUSTED_PROXY_HOPS": "how many gateways stand in front of the web processes and append to "
    "X-Forwarded-For; default 1 (the dev gateway or nginx). With 1 or more, never expose a service's own port "
    "to clients: they could name any address. 0 when clients reach the services directly",
    "LABINOV_PUBLIC_RATE_LIMIT": "public writes (registering, cancelling) one client address may make for one "
    "session, as a limits string; default 120/minute;1000/hour (a whole agency behind one office NAT). off turns "
    "every public-write limit off (benchmarks, load tests)",
    "LABINOV_PUBLIC_RATE_LIMIT_PER_CLIENT": "public writes one client address may make across all sessions; "
    "default 300/minute;3000/hour; off turns this one off",
    "LABINOV_RATE_LIMIT_STORAGE_URL": "the Redis every web process counts rate limits in (redis://, rediss://, "
    "redis+unix://); unset = the broker's Redis (the embedded one on its socket); memory:// is refused",
    "LABINOV_RELAY_POLL_MS": "how often an idle outbox relay looks for rows anyway, in milliseconds; default 1000. "
    "A committed outbox row wakes the relays at once; the poll is the safety net for a lost wake-up and times "
    "retries",
    "LABINOV_MAIL_POLL_MS": "the same for notification's mail sender (a queued delivery wakes it); default 1000",
    "LABINOV_SMS_GATEWAY_URL": "where notification POSTs SMS and WhatsApp messages (an HTTP gateway, JSON body "
    "{to, text, channel, reference}); unset = SMS and WhatsApp deliveries fail with that reason",
    "LABINOV_SMS_GATEWAY_TOKEN": "sent to the gateway as Authorization: Bearer <token>",
    "LABINOV_SMS_GATEWAY_SECRET": "the shared secret the gateway's status callback (POST "
    "/notification/api/v1/gateway/status) sends in X-Gateway-Secret; unset = every callback is refused",
    "LABINOV_MAIL_BOUNCE_SECRET": "the shared secret a mail provider's bounce report (POST "
    "/notification/api/v1/mail/bounces) sends in X-Bounce-Secret; unset = every bounce report is refused",
    "LABINOV_SMS_GATEWAY_FIELDS": "the gateway's names for the body fields, e.g. to=msisdn,text=message "
    "(to, text, channel, reference); unset = those names",
    "LABINOV_WHATSAPP_GATEWAY_URL": "a separate gateway for WhatsApp; unset = the SMS gateway (channel says which)",
    "LABINOV_SMS_RATE": "SMS sent per period by all notification workers together, e.g. 5/second; default 5/second",
    "LABINOV_WHATSAPP_RATE": "the same for WhatsApp; default 10/second",
    "LABINOV_SMS_MESSAGES": "transactional messages that also go as a short SMS, by kind (registration_confirmed,"
    "registration_promoted, ...), comma-separated; unset = none",
    "LABINOV_WEBHOOK_ALLOW_LOCAL": "true also lets outgoing webhooks go to http:// and to loopback and private "
    "addresses (development and tests); default false",
    "PROMETHEUS_MULTIPROC_DIR": "a folder shared by a service's web and worker processes for metrics",
}


class ConfigurationError(RuntimeError):
    """A setting from the environment is unusable; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    service: str
    data_dir: Path
    port: int
    bind_host: str
    broker_url: str
    broker_is_embedded: bool
    database_url: str
    smtp_url: str | None
    mail_from: str
    jwt_private_key_pem: str | None
    jwt_public_key_pem: str | None
    jwks_url: str | None
    token_lifetime_seconds: int
    max_handler_attempts: int
    public_url: str
    secret_key: str | None
    log_level: str
    service_ports: dict[str, int]
    timezone: ZoneInfo
    trusted_proxy_hops: int
    #: limits strings (``"120/minute;1000/hour"``); ``None`` when turned ``off``
    public_rate_limit: str | None = DEFAULT_PUBLIC_RATE_LIMIT
    public_rate_limit_per_client: str | None = DEFAULT_PUBLIC_RATE_LIMIT_PER_CLIENT
    #: where every web process counts them; ``None`` when no shared Redis is known (start-up of a web
    #: process with limits on then stops, naming the variable: see ``shared.ratelimit``)
    rate_limit_storage_url: str | None = None
    #: messages from public causes one address may get per clock hour (notification's flood cap)
    mail_hourly_cap: int = 10
    #: the safety-net polls of the outbox relay and the mail sender (wake-ups make them rarely needed)
    relay_poll_seconds: float = 1.0
    mail_poll_seconds: float = 1.0
    #: the SMS/WhatsApp gateway (``services/notification/gateway.py``)
    sms_gateway_url: str | None = None
    sms_gateway_token: str | None = None
    sms_gateway_secret: str | None = None
    #: the shared secret of bounce reports about accepted mail (``services/notification/bounces.py``)
    mail_bounce_secret: str | None = None
    whatsapp_gateway_url: str | None = None
    #: the gateway's names for the body fields ``to``, ``text``, ``channel``, ``reference``
    sms_gateway_fields: tuple[tuple[str, str], ...] = ()
    #: messages per second of each gateway channel, and the burst (the limit's amount), for all workers together
    channel_rates: tuple[tuple[str, float, int], ...] = (("sms", 5.0, 5), ("whatsapp", 10.0, 10))
    #: kinds of transactional message that also go as a short SMS
    sms_messages: tuple[str, ...] = ()
    webhook_allow_local: bool = False

    @property
    def mailbox_dir(self) -> Path:
        return self.data_dir / "mailbox"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"


def embedded_broker_socket(data_dir: Path) -> Path:
    """Where the embedded Redis broker listens; every process of one data folder shares it."""
    return data_dir.resolve() / "broker" / "redis.sock"


def embedded_broker_url(data_dir: Path) -> str:
    return f"redis+socket://{embedded_broker_socket(data_dir)}"


def rate_limit_storage_url(env: dict[str, str], broker_url: str, broker_is_embedded: bool) -> str | None:
    """Where rate limits are counted: ``LABINOV_RATE_LIMIT_STORAGE_URL``, else the broker's own Redis.

    The embedded broker is a Redis on a unix socket under the data folder, shared by every process of the
    suite, so the counters live there too (``redis+unix://``, the scheme the ``limits`` library reads). A
    RabbitMQ broker holds no Redis: then there is no shared storage unless the variable names one.
    Per-process memory (``memory://``) is refused: each of N web processes would count alone, letting one
    client make N times the limit, and a restart would forget.
    """
    name = "LABINOV_RATE_LIMIT_STORAGE_URL"
    if (env.get(name) or "").startswith("memory:"):
        raise ConfigurationError(
            f"{name}=memory:// counts in each process's own memory, so every web process would let a client "
            "make the whole limit again; name a Redis every web process shares (redis://host:6379/0), or unset "
            "it to use the broker's"
        )
    explicit = _url(env, name, RATE_LIMIT_STORAGE_SCHEMES)
    if explicit:
        return explicit
    scheme = urlsplit(broker_url).scheme
    if broker_is_embedded or scheme == "redis+socket":
        return "redis+unix://" + broker_url.split("://", 1)[1]
    if scheme in ("redis", "rediss"):
        return broker_url
    return None


def _rate_limit(env: dict[str, str], name: str, default: str) -> str | None:
    """A limits string (``60/minute;600/hour``) from ``name``, checked now; ``off`` is ``None``."""
    from limits import parse_many

    raw = (env.get(name) or default).strip()
    if raw.lower() == "off":
        return None
    try:
        items = parse_many(raw)
    except ValueError:
        items = []
    if not items:
        raise ConfigurationError(
            f"{name}={raw!r} is not a rate limit: write amounts per period separated by ';', such as "
            f"{default!r}, or 'off'"
        )
    if any(item.amount < 1 for item in items):
        raise ConfigurationError(f"{name}={raw!r} allows nothing at all; to turn the limit off write 'off'")
    return raw


GATEWAY_FIELDS = ("to", "text", "channel", "reference")


def _gateway_fields(env: dict[str, str], name: str) -> tuple[tuple[str, str], ...]:
    """``to=msisdn,text=message`` as ``(("to", "msisdn"), ("text", "message"))``; only the four known fields."""
    raw = (env.get(name) or "").strip()
    renamed = dict.fromkeys(GATEWAY_FIELDS, "")
    for item in filter(None, (part.strip() for part in raw.split(","))):
        field, _, gateway_name = item.partition("=")
        if field.strip() not in renamed or not gateway_name.strip():
            raise ConfigurationError(
                f"{name}={raw!r}: write field=name pairs separated by commas, fields among {', '.join(GATEWAY_FIELDS)}"
            )
        renamed[field.strip()] = gateway_name.strip()
    return tuple((field, renamed[field] or field) for field in GATEWAY_FIELDS)


def _per_second(env: dict[str, str], name: str, default: str) -> tuple[float, int]:
    """A rate such as ``5/second`` or ``300/minute`` as (messages per second, burst = the amount)."""
    from limits import parse

    raw = (env.get(name) or default).strip()
    try:
        item = parse(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name}={raw!r} is not a rate: write an amount per period, such as {default!r}"
        ) from None
    if item.amount < 1:
        raise ConfigurationError(f"{name}={raw!r} allows nothing at all")
    return item.amount / item.get_expiry(), item.amount


def _flag(env: dict[str, str], name: str) -> bool:
    raw = (env.get(name) or "false").strip().lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigurationError(f"{name}={raw!r} must be true or false")
    return raw in ("true", "1", "yes")


def _int(env: dict[str, str], name: str, default: int, minimum: int = 1, maximum: int = 65535) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a whole number") from None
    if not minimum <= value <= maximum:
        raise ConfigurationError(f"{name}={value} must be between {minimum} and {maximum}")
    return value


def _first_set(env: dict[str, str], name: str, *old_names: str) -> str:
    """``name``, or the first of its ``old_names`` that is set (a renamed variable keeps working)."""
    return next((old for old in old_names if env.get(old) and not env.get(name)), name)


def _url(env: dict[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = env.get(name)
    if raw in (None, ""):
        return None
    scheme = urlsplit(raw).scheme
    if scheme not in schemes:
        raise ConfigurationError(
            f"{name}={redact_url(raw)!r} has scheme {scheme!r}; expected one of: {', '.join(schemes)}"
        )
    return raw


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or default).upper()
    if raw not in choices:
        raise ConfigurationError(f"{name}={raw!r} must be one of: {', '.join(choices)}")
    return raw


def _timezone(env: dict[str, str], name: str, default: str) -> ZoneInfo:
    raw = env.get(name) or default
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"{name}={raw!r} is not a time zone name such as Asia/Makassar or UTC") from None


def _pem(env: dict[str, str], name: str, private: bool) -> str | None:
    """A PEM key from ``name``, loaded once here so that a corrupt key stops start-up naming the variable."""
    from cryptography.hazmat.primitives import serialization

    raw = env.get(name)
    if raw in (None, ""):
        return None
    try:
        if private:
            serialization.load_pem_private_key(raw.encode(), password=None)
        else:
            serialization.load_pem_public_key(raw.encode())
    except (ValueError, TypeError) as exc:
        kind = "private" if private else "public"
        raise ConfigurationError(f"{name} must hold a PEM-encoded {kind} key: {exc}") from None
    return raw


def load_settings(service: str, env: dict[str, str] | None = None) -> Settings:
    """Read the settings of ``service`` from ``env`` (default: ``os.environ``)."""
    env = dict(os.environ if env is None else env)
    if service not in SERVICES:
        raise ConfigurationError(f"unknown service {service!r}; expected one of {SERVICES}")
    data_dir = Path(env.get("LABINOV_DATA_DIR") or "./var").resolve()
    port = _int(env, "LABINOV_PORT", 8000, maximum=65535 - len(SERVICES))  # the services take port+1..+3

    broker_url = _url(env, "LABINOV_BROKER_URL", BROKER_SCHEMES)
    database_url = _url(env, f"LABINOV_{service.upper()}_DATABASE_URL", DATABASE_SCHEMES)
    if database_url and database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]
    smtp_url = _url(env, "LABINOV_SMTP_URL", ("smtp", "smtps"))
    resolved_broker_url = broker_url or embedded_broker_url(data_dir)
    public_rate_limit = _rate_limit(env, "LABINOV_PUBLIC_RATE_LIMIT", DEFAULT_PUBLIC_RATE_LIMIT)
    per_client_rate_limit = _rate_limit(
        env, "LABINOV_PUBLIC_RATE_LIMIT_PER_CLIENT", DEFAULT_PUBLIC_RATE_LIMIT_PER_CLIENT
    )

    return Settings(
        service=service,
        data_dir=data_dir,
        port=port,
        bind_host=env.get("LABINOV_BIND_HOST") or "127.0.0.1",
        broker_url=resolved_broker_url,
        broker_is_embedded=broker_url is None,
        database_url=database_url or f"sqlite:///{data_dir / (service + '.sqlite3')}",
        smtp_url=smtp_url,
        mail_from=env.get("LABINOV_MAIL_FROM") or "Labinov <noreply@labinov.local>",
        jwt_private_key_pem=_pem(env, "LABINOV_JWT_PRIVATE_KEY", private=True),
        jwt_public_key_pem=_pem(env, "LABINOV_JWT_PUBLIC_KEY", private=False),
        jwks_url=_url(env, "LABINOV_JWKS_URL", ("http", "https")),
        token_lifetime_seconds=_int(env, "LABINOV_TOKEN_LIFETIME_SECONDS", 3600, 60, 7 * 24 * 3600),
        max_handler_attempts=_int(
            env, _first_set(env, "LABINOV_MAX_HANDLER_ATTEMPTS", "LABINOV_MAX_DELIVERY_ATTEMPTS"), 5, 1, 100
        ),
        secret_key=env.get("LABINOV_SECRET_KEY") or None,
        log_level=_choice(env, "LABINOV_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
        service_ports={
            name: _int(env, f"LABINOV_{name.upper()}_PORT", port + 1 + index) for index, name in enumerate(SERVICES)
        },
        public_url=(env.get("LABINOV_PUBLIC_URL") or f"http://127.0.0.1:{port}").rstrip("/"),
        timezone=_timezone(env, "LABINOV_TIMEZONE", "Asia/Makassar"),
        trusted_proxy_hops=_int(env, "LABINOV_TRUSTED_PROXY_HOPS", 1, minimum=0, maximum=5),
        # `off` turns every public-write limit off, the per-client one included
        public_rate_limit=public_rate_limit,
        public_rate_limit_per_client=per_client_rate_limit if public_rate_limit else None,
        rate_limit_storage_url=rate_limit_storage_url(env, resolved_broker_url, broker_url is None),
        relay_poll_seconds=_int(env, "LABINOV_RELAY_POLL_MS", 1000, 10, 3_600_000) / 1000,
        mail_poll_seconds=_int(env, "LABINOV_MAIL_POLL_MS", 1000, 10, 3_600_000) / 1000,
        mail_hourly_cap=_int(env, "LABINOV_MAIL_HOURLY_CAP", 10, minimum=1, maximum=100000),
        sms_gateway_url=_url(env, "LABINOV_SMS_GATEWAY_URL", ("http", "https")),
        sms_gateway_token=env.get("LABINOV_SMS_GATEWAY_TOKEN") or None,
        sms_gateway_secret=env.get("LABINOV_SMS_GATEWAY_SECRET") or None,
        mail_bounce_secret=env.get("LABINOV_MAIL_BOUNCE_SECRET") or None,
        whatsapp_gateway_url=_url(env, "LABINOV_WHATSAPP_GATEWAY_URL", ("http", "https")),
        sms_gateway_fields=_gateway_fields(env, "LABINOV_SMS_GATEWAY_FIELDS"),
        channel_rates=(
            ("sms", *_per_second(env, "LABINOV_SMS_RATE", "5/second")),
            ("whatsapp", *_per_second(env, "LABINOV_WHATSAPP_RATE", "10/second")),
        ),
        sms_messages=tuple(kind.strip() for kind in (env.get("LABINOV_SMS_MESSAGES") or "").split(",") if kind.strip()),
        webhook_allow_local=_flag(env, "LABINOV_WEBHOOK_ALLOW_LOCAL"),
    )
