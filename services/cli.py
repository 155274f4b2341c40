"""The ``labinov`` command: run the suite, run one process, migrate, manage accounts.

labinov run                      start every process on the embedded defaults (what `make run` does)
labinov migrate [SERVICE ...]    bring databases to the newest schema
labinov web SERVICE              one service's web process under gunicorn
labinov worker SERVICE           one service's worker (consumer + outbox relay)
labinov gateway                  the development gateway on LABINOV_PORT
labinov user create --role organiser|evaluator --email EMAIL --password PASSWORD [--name N] [--opd O]
"""

from __future__ import annotations

import importlib
import os
import shlex
import shutil
import sys

import click

from shared.config import SERVICES, ConfigurationError, embedded_broker_socket, load_settings, redact_url
from shared.runtime import ServiceRuntime


def service_runtime(name: str) -> ServiceRuntime:
    return importlib.import_module(f"services.{name}.bootstrap").bootstrap()


class _Commands(click.Group):
    """Every command reports an unusable setting as one line naming the variable, not as a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigurationError as exc:
            raise click.ClickException(f"configuration: {exc}") from None


@click.group(cls=_Commands, help=__doc__)
def main() -> None:
    pass


@main.command()
@click.argument("services", nargs=-1, type=click.Choice(SERVICES))
def migrate(services: tuple[str, ...]) -> None:
    """Migrate the databases of SERVICES (default: all three)."""
    from shared.migrations import upgrade

    for name in services or SERVICES:
        upgrade(service_runtime(name))
        click.echo(f"{name}: database is up to date")


@main.command()
@click.argument("service", type=click.Choice(SERVICES))
def worker(service: str) -> None:
    """Run SERVICE's worker: its event consumer, its outbox relay and its background loops."""
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


@main.command()
@click.argument("service", type=click.Choice(SERVICES))
@click.option("--workers", default=2, show_default=True)
def web(service: str, workers: int) -> None:
    """Run SERVICE's web process under gunicorn on its own port."""
    settings = load_settings(service)
    os.execv(sys.executable, web_command(service, settings.bind_host, settings.service_ports[service], workers))


@main.command()
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


@user.command("create")
@click.option("--role", type=click.Choice(["organiser", "evaluator"]), required=True)
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--name", default=None)
@click.option("--opd", default=None, help="the agency the account belongs to")
def create_user(role: str, email: str, password: str, name: str | None, opd: str | None) -> None:
    """Create an account that can sign in and receive tokens."""
    from services.registration.domain import create_account
    from shared.errors import DomainError
    from shared.migrations import upgrade

    runtime = service_runtime("registration")
    upgrade(runtime)
    try:
        with runtime.unit_of_work() as uow:
            account = create_account(uow, role, email, password, name, opd)
            uow.commit()  # the command opened the unit of work, so it commits (the domain never does)
    except DomainError as exc:
        raise click.ClickException(f"{exc.detail} {exc.errors or ''}".strip()) from None
    click.echo(f"created {account.role} {account.email} ({account.id})")


@main.command()
def run() -> None:
    """Start the whole suite on this machine and stop it all on Ctrl-C."""
    from honcho.manager import Manager
    from honcho.printer import Printer

    from shared.messaging.broker import start_embedded_broker
    from shared.migrations import upgrade
    from shared.tokens import load_private_key_pem

    try:
        settings = {name: load_settings(name) for name in SERVICES}
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
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
