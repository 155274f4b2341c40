"""The ``labinov`` command: run the suite, run one process, migrate, manage accounts.

Every command works on one suite: the data folder ``LABINOV_DATA_DIR`` (default ``./var`` under the folder
the command runs in) and the databases the settings name (unset: SQLite files in that folder). Commands that
write say which folder and database they write to; ``labinov user create`` refuses a data folder that holds
no suite unless told ``--create``, because a command run from the wrong folder once silently made a new,
empty database there. Every refusal is printed as sentences saying what to do, never as a traceback or a
Python value.
"""

from __future__ import annotations

import importlib
import os
import shlex
import shutil
import sys
from pathlib import Path

import click
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from services.registration.rules import MIN_PASSWORD_LENGTH
from shared.config import (
    SERVICES,
    ConfigurationError,
    Settings,
    embedded_broker_socket,
    load_settings,
    redact_url,
)
from shared.problems import Problem
from shared.runtime import ServiceRuntime

HELP = """Run the Labinov suite, one of its processes, its migrations, and manage accounts.

It works on the data folder LABINOV_DATA_DIR (default: ./var in the current folder) and the databases the
LABINOV_*_DATABASE_URL settings name (default: SQLite files in that folder). `labinov COMMAND --help` tells
more about one command.
"""


def service_runtime(name: str, settings: Settings | None = None) -> ServiceRuntime:
    return importlib.import_module(f"services.{name}.bootstrap").bootstrap(settings)


def sentence(text: str) -> str:
    """``text`` as a sentence: a capital first letter and a full stop."""
    text = " ".join(text.split())
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _lower_first(text: str) -> str:
    text = " ".join(text.split()).rstrip(".")
    return text[:1].lower() + text[1:] if text[1:2].islower() or len(text) == 1 else text


def refusal_sentences(doing: str, error: Problem, options: tuple[str, ...] = ()) -> str:
    """A domain refusal as sentences: ``"Cannot create the account: password too short (--password: at
    least 12 characters)."`` Field errors name the command-line option when there is one."""
    detail = error.detail.strip().rstrip(".")
    notes = []
    for field, messages in (error.errors or {}).items():
        name = f"--{field.replace('_', '-')}" if field in options else field.replace("_", " ")
        for message in messages if isinstance(messages, list) else [str(messages)]:
            if message.strip().rstrip(".") != detail:
                notes.append(f"{name}: {_lower_first(message)}")
    return sentence(f"{doing}: {_lower_first(detail)}" + (f" ({'; '.join(notes)})" if notes else ""))


class _Commands(click.Group):
    """Every refusal is sentences: an unusable setting names its variable, an unreachable database says
    which, a domain rule says what to change. ``--help`` lists every command, one per line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigurationError as exc:
            raise click.ClickException(sentence(f"The settings cannot be used: {exc}")) from None
        except OperationalError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0] if str(exc.orig or exc).strip() else "no answer"
            raise click.ClickException(
                sentence(
                    f"A database could not be used ({_lower_first(reason)}); check the LABINOV_*_DATABASE_URL "
                    "settings and that the database server is running"
                )
            ) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """One line per command, a group's commands each on their own line (``user create``)."""
        rows = []
        for name, command in _leaf_commands(self, ctx):
            arguments = [piece for piece in command.collect_usage_pieces(ctx) if piece != "[OPTIONS]"]
            rows.append((" ".join([name, *arguments]), command.get_short_help_str(limit=200)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows, col_max=24)


def _leaf_commands(group: click.Group, ctx: click.Context, prefix: str = ""):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        if isinstance(command, click.Group):
            yield from _leaf_commands(command, ctx, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


@click.group(cls=_Commands, help=HELP)
def main() -> None:
    pass


def _where(settings: Settings) -> str:
    """Which data folder and database a command writes to, for its first lines of output."""
    return (
        f"Data folder: {settings.data_dir}\n"
        f"{settings.service.capitalize()} database: {redact_url(settings.database_url)}"
    )


def _sqlite_file(settings: Settings) -> Path | None:
    """The SQLite file of ``settings``' database, or ``None`` when it is a server's database."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite":
        return None
    return Path(url.database or "")


def _missing_suite(settings: Settings) -> str | None:
    """Why the data folder and database of ``settings`` hold no suite, and what to do; ``None`` when they do.

    A suite is there when the registration database has been migrated: its SQLite file exists (looked at
    before anything opens it, since opening one creates it) and it, or the PostgreSQL database, has
    Alembic's version table.
    """
    variable = f"LABINOV_{settings.service.upper()}_DATABASE_URL"
    sqlite_file = _sqlite_file(settings)
    if sqlite_file is not None and not sqlite_file.is_file():
        return (
            f"No Labinov suite is in the data folder {settings.data_dir}: its {settings.service} database "
            f"{sqlite_file} does not exist. Run the command in the folder that holds the suite (the one "
            f"`make run` was started in) or set LABINOV_DATA_DIR to the suite's data folder; add --create to "
            f"start a new suite in {settings.data_dir}."
        )
    runtime = service_runtime(settings.service, settings)
    try:
        migrated = inspect(runtime.engine).has_table("alembic_version")
    finally:
        runtime.engine.dispose()
    if migrated:
        return None
    return (
        f"The {settings.service} database {redact_url(settings.database_url)} holds no Labinov suite: it was "
        f"never migrated. Set {variable} to the suite's database, or run `labinov migrate` (or add --create) "
        "to start a new suite in this one."
    )


@main.command(short_help="Bring databases to the newest schema (default: all).")
@click.argument("services", nargs=-1, type=click.Choice(SERVICES), metavar="[SERVICE]...")
def migrate(services: tuple[str, ...]) -> None:
    """Bring the databases of SERVICES (registration, notification, evaluation; default: all three) to the
    newest schema, creating them if needed."""
    from shared.migrations import upgrade

    settings = {name: load_settings(name) for name in services or SERVICES}
    click.echo(f"Data folder: {next(iter(settings.values())).data_dir}")
    for name, service_settings in settings.items():
        upgrade(service_runtime(name, service_settings))
        click.echo(f"{name}: database {redact_url(service_settings.database_url)} is up to date")


@main.command(short_help="Run one service's worker (consumer, outbox relay).")
@click.argument("service", type=click.Choice(SERVICES), metavar="SERVICE")
def worker(service: str) -> None:
    """Run SERVICE's worker (registration, notification or evaluation): its event consumer, its outbox relay
    and its background loops."""
    importlib.import_module(f"services.{service}.worker").main()


def gunicorn_command(app: str, name: str, host: str, port: int, *options: str) -> list[str]:
    """Gunicorn serving ``app`` with the shared settings in ``shared/gunicorn_config.py``."""
    return [
        sys.executable, "-m", "gunicorn", app, "--config", "python:shared.gunicorn_config",
        "--bind", f"{host}:{port}", "--name", f"labinov-{name}", *options,
    ]  # fmt: skip


def web_command(service: str, host: str, port: int, workers: int = 2) -> list[str]:
    """The web process of ``service``."""
    return gunicorn_command(f"services.{service}.wsgi:app", service, host, port, "--workers", str(workers))


@main.command(short_help="Run one service's web process under gunicorn.")
@click.argument("service", type=click.Choice(SERVICES), metavar="SERVICE")
@click.option("--workers", default=2, show_default=True)
def web(service: str, workers: int) -> None:
    """Run SERVICE's web process (registration, notification or evaluation) under gunicorn on its own port."""
    settings = load_settings(service)
    os.execv(sys.executable, web_command(service, settings.bind_host, settings.service_ports[service], workers))


@main.command(short_help="Serve the one address that routes to every service.")
def gateway() -> None:
    """Serve the one address (LABINOV_PORT) that routes /<service>/ to each service's own port."""
    settings = load_settings("registration")
    options = ("--workers", "1", "--threads", "16")
    os.execv(
        sys.executable, gunicorn_command("services.gateway:app", "gateway", settings.bind_host, settings.port, *options)
    )


@main.group()
def user() -> None:
    """Organiser and evaluator accounts."""


@user.command("create", short_help="Create an organiser or evaluator account.")
@click.option("--role", type=click.Choice(["organiser", "evaluator"]), required=True)
@click.option("--email", required=True)
@click.option("--password", required=True, help=f"at least {MIN_PASSWORD_LENGTH} characters")
@click.option("--name", default=None)
@click.option("--opd", default=None, help="the agency the account belongs to")
@click.option(
    "--create",
    "create_suite",
    is_flag=True,
    help="start a new suite in the data folder if it holds none (otherwise that is refused)",
)
def create_user(role: str, email: str, password: str, name: str | None, opd: str | None, create_suite: bool) -> None:
    """Create an organiser or evaluator account that can sign in and receive tokens."""
    from services.registration.domain import create_account
    from shared.errors import DomainError
    from shared.migrations import upgrade

    settings = load_settings("registration")
    click.echo(_where(settings))
    missing = _missing_suite(settings)
    if missing and not create_suite:
        raise click.ClickException(missing)
    runtime = service_runtime("registration", settings)
    upgrade(runtime)  # a suite made by an older version gets the newest schema; --create makes a new one
    try:
        with runtime.unit_of_work() as uow:
            account = create_account(uow, role, email, password, name, opd)
            uow.commit()  # the command opened the unit of work, so it commits (the domain never does)
    except DomainError as exc:
        raise click.ClickException(refusal_sentences("Cannot create the account", exc, ("email", "password"))) from None
    finally:
        runtime.engine.dispose()
    click.echo(f"Created {account.role} {account.email} ({account.id}).")


@main.command(short_help="Start the whole suite here; Ctrl-C stops it all.")
def run() -> None:
    """Start the whole suite on this machine and stop it all on Ctrl-C."""
    from honcho.manager import Manager
    from honcho.printer import Printer

    from shared.messaging.broker import start_embedded_broker
    from shared.migrations import upgrade
    from shared.tokens import load_private_key_pem

    settings = {name: load_settings(name) for name in SERVICES}
    first = settings["registration"]
    if first.broker_url.startswith("memory://"):
        raise click.ClickException(
            "LABINOV_BROKER_URL=memory:// only works inside one process; unset it to use the embedded broker"
        )
    first.data_dir.mkdir(parents=True, exist_ok=True)
    for name in SERVICES:
        upgrade(service_runtime(name))
    load_private_key_pem(first)  # create the signing key once, before any process races for it

    manager = Manager(Printer(sys.stdout))
    base_env = {**os.environ, "LABINOV_DATA_DIR": str(first.data_dir), "PYTHONUNBUFFERED": "1"}
    # The embedded broker starts first and stops last, so no worker sees it vanish while shutting down.
    broker = start_embedded_broker(embedded_broker_socket(first.data_dir)) if first.broker_is_embedded else None
    for name in SERVICES:
        metrics_dir = first.data_dir / "metrics" / name
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env = {**base_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        manager.add_process(
            f"{name}-web", shlex.join(web_command(name, first.bind_host, first.service_ports[name])), env=env
        )
        manager.add_process(
            f"{name}-worker", shlex.join([sys.executable, "-m", "services.cli", "worker", name]), env=env
        )
    manager.add_process("gateway", shlex.join([sys.executable, "-m", "services.cli", "gateway"]), env=base_env)

    click.secho(
        f"\n  Labinov is starting. Open {first.public_url}/  (Ctrl-C stops everything)\n"
        f"  data: {first.data_dir}   broker: {'embedded Redis' if first.broker_is_embedded else redact_url(first.broker_url)}\n",
        fg="green",
        bold=True,
    )
    try:
        manager.loop()
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(15)
    # 130 is honcho's answer to Ctrl-C: stopping on request is a clean stop.
    sys.exit(0 if manager.returncode in (None, 130) else manager.returncode)


if __name__ == "__main__":
    main()
