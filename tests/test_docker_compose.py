"""docker-compose.yml, the Dockerfile and deploy/ held to the code, since no Docker engine runs in the tests.

Each test reads the compose file as Docker would (YAML with anchors and merge keys, ``${VAR}`` interpolation)
and checks one promise against the code it depends on: variable names against ``shared.config``, commands
against the click CLI, health URLs against each service's Flask routes, the gateway against the services'
ports, the database init script against the database URLs. A rename in the code fails here, naming what to
change, instead of in someone's ``docker compose up``.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask

from services.cli import main as labinov_cli
from shared.config import ENVIRONMENT_VARIABLES, SERVICES, Settings, load_settings
from shared.http import MAX_BODY_BYTES

ROOT = Path(__file__).resolve().parents[1]

#: Stand-ins for the secrets compose requires from the environment (``${NAME:?...}``), so the settings can
#: be loaded the way a container would load them (``load_settings`` loads the key, so it must be a real one).
STAND_IN_SECRETS = {
    "LABINOV_SECRET_KEY": "a-long-random-string",
    "LABINOV_JWT_PRIVATE_KEY": Ed25519PrivateKey.generate()
    .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    .decode(),
}
SECRET_VARIABLES = ("LABINOV_SECRET_KEY", "LABINOV_JWT_PRIVATE_KEY")
_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


# --- reading the files ------------------------------------------------------------------------------


@cache
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_services() -> dict[str, dict]:
    return compose()["services"]


def web(service: str) -> str:
    return f"{service}-web"


def worker(service: str) -> str:
    return f"{service}-worker"


def app_containers() -> list[tuple[str, str]]:
    """(compose service, Labinov service) for every container that runs Labinov code."""
    return [(process(service), service) for service in SERVICES for process in (web, worker)]


def environment(name: str) -> dict[str, str]:
    """A compose service's environment as written (before interpolation); both YAML forms accepted."""
    raw = compose_services()[name].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}`` and ``$$``, resolved against ``env``."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        value = env.get(name)
        if op is None:
            return value or ""
        if value is not None and not (op.startswith(":") and value == ""):
            return value
        if op.endswith("?"):
            raise KeyError(f"docker-compose.yml requires ${{{name}}} from the environment: {arg}")
        return arg

    return _INTERPOLATION.sub(substitute, value)


def container_settings(name: str, service: str) -> Settings:
    """The settings ``service``'s code would load inside compose service ``name``."""
    env = {key: interpolate(value, STAND_IN_SECRETS) for key, value in environment(name).items()}
    return load_settings(service, env)


def labinov_invocations(name: str) -> list[list[str]]:
    """The ``labinov`` commands a compose service runs, in order, as argument lists without ``labinov``.

    Understands the exec form (``["labinov", "worker", "x"]``) and ``sh -c "a && exec b"``.
    """
    command = compose_services()[name].get("command")
    argv = shlex.split(command) if isinstance(command, str) else list(command or [])
    steps = [argv]
    if argv[:2] == ["sh", "-c"]:
        steps = [shlex.split(step) for step in argv[2].split("&&")]
    steps = [step[1:] if step[:1] == ["exec"] else step for step in steps]
    return [step[1:] for step in steps if step[:1] == ["labinov"]]


def build_source(name: str) -> tuple[Path, str] | None:
    """(context folder, Dockerfile name) a compose service is built from, or None for a pulled image."""
    build = compose_services()[name].get("build")
    if build is None:
        return None
    if isinstance(build, str):
        build = {"context": build}
    return (ROOT / build.get("context", ".")).resolve(), build.get("dockerfile", "Dockerfile")


def service_choices(subcommand: str) -> tuple[str, ...]:
    """The services a ``labinov`` subcommand accepts, from its click argument."""
    params = labinov_cli.commands[subcommand].params
    return next(param.type.choices for param in params if param.name in ("service", "services"))


def healthcheck_url(name: str) -> SplitResult:
    """The URL a compose service's health check opens."""
    test = compose_services()[name]["healthcheck"]["test"]
    text = test if isinstance(test, str) else " ".join(test)
    urls = re.findall(r"https?://[^\s'\"]+", text)
    assert len(urls) == 1, f"{name}: expected one URL in its health check, found {urls}"
    return urlsplit(urls[0])


def depends_on(name: str) -> dict[str, str]:
    """A compose service's dependencies with their start condition (list form means service_started)."""
    raw = compose_services()[name].get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {target: (spec or {}).get("condition", "service_started") for target, spec in raw.items()}


def bind_mount(name: str, target_prefix: str) -> Path:
    """The host file a compose service mounts at (or under) ``target_prefix``."""
    for volume in compose_services()[name].get("volumes", []):
        source, target = volume.split(":")[:2]
        if target.startswith(target_prefix) and source.startswith("."):
            return ROOT / source
    raise AssertionError(f"{name} mounts no file at {target_prefix}")


def named_volume(name: str, target: str) -> str | None:
    """The named volume (not a host folder) a compose service mounts at ``target``."""
    for volume in compose_services()[name].get("volumes", []):
        source, mounted_at = volume.split(":")[:2]
        if mounted_at == target and not source.startswith((".", "/")):
            return source
    return None


def nginx_config() -> str:
    """The gateway's nginx.conf, found through its mount in docker-compose.yml, without comments."""
    text = bind_mount("gateway", "/etc/nginx/nginx.conf").read_text()
    return re.sub(r"#[^\n]*", "", text)


def nginx_locations() -> dict[str, str]:
    """``location`` → the block's body; an exact match is keyed ``= /``. Labinov's blocks do not nest."""
    return {
        (exact or "") + path: body
        for exact, path, body in re.findall(r"location\s+(=\s*)?(\S+)\s*\{([^{}]*)\}", nginx_config())
    }


def nginx_upstreams() -> dict[str, list[str]]:
    """``upstream`` name → its ``server`` addresses."""
    return {
        name: re.findall(r"^\s*server\s+(\S+?)[\s;]", body, re.MULTILINE)
        for name, body in re.findall(r"upstream\s+(\S+)\s*\{([^{}]*)\}", nginx_config())
    }


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in lines]


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the Dockerfile's last stage: what the running image is made of."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


@pytest.fixture(scope="module")
def flask_apps(tmp_path_factory) -> Iterator[dict[str, Flask]]:
    """Every service's real Flask app, on embedded defaults in a throw-away data folder."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        for variable in ENVIRONMENT_VARIABLES:
            monkeypatch.delenv(variable, raising=False)
        monkeypatch.setenv("LABINOV_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        apps = {service: importlib.import_module(f"services.{service}.app").create_app() for service in SERVICES}
    yield apps
    for app in apps.values():
        app.extensions["labinov"].engine.dispose()


def routes(app: Flask) -> set[str]:
    return {rule.rule for rule in app.url_map.iter_rules()}


# --- the image ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, service", app_containers())
def test_every_service_runs_a_web_and_a_worker_built_from_the_one_dockerfile(name: str, service: str) -> None:
    """One image for every process: a fix in the code reaches web and worker alike."""
    assert name in compose_services(), f"docker-compose.yml has no {name!r} for service {service!r}"
    assert build_source(name) == (ROOT, "Dockerfile"), f"{name} is not built from the project's Dockerfile"


def test_the_image_installs_the_project_and_runs_as_a_non_root_user() -> None:
    """The console script comes from ``pip install .``; a compromised process must not own the container."""
    stage = final_stage()
    assert stage[0][1].split()[0] == "python:3.11-slim"
    assert any(op == "RUN" and re.search(r"pip install \.(\s|$)", args) for op, args in dockerfile_instructions())
    users = [args for op, args in stage if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"the image runs as {users or 'root'}"
    assert ("WORKDIR", "/app") in stage
    env = dict(item.split("=", 1) for op, args in stage if op == "ENV" for item in shlex.split(args))
    assert env.get("LABINOV_DATA_DIR") == "/data"


def test_the_build_context_holds_what_pip_install_needs() -> None:
    """.dockerignore is an allowlist: a package or readme pyproject.toml names but the context lacks breaks the
    build only on someone else's machine."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", pyproject["project"]["readme"]} | {
        pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {
        source.rstrip("/").removeprefix("./")
        for op, args in dockerfile_instructions()
        if op == "COPY" and "--from" not in args
        for source in shlex.split(args)[:-1]
    }
    ignore_lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    allowed = {line[1:].rstrip("/") for line in ignore_lines if line.startswith("!")}
    assert needed <= copied, f"the Dockerfile does not COPY {sorted(needed - copied)}"
    if "*" in ignore_lines:  # everything is left out unless re-included with !name
        assert needed <= allowed, f".dockerignore leaves out {sorted(needed - allowed)}"


@pytest.mark.parametrize("name, service", app_containers())
def test_volumes_of_the_app_containers_are_writable_by_the_image_user(name: str, service: str) -> None:
    """A named volume starts as a copy of the image's folder; unless the image made it for its non-root user,
    the process cannot write its metrics there."""
    owned = " ".join(args for op, args in final_stage() if op == "RUN" and "chown" in args)
    for volume in compose_services()[name].get("volumes", []):
        target = volume.split(":")[1]
        assert re.search(rf"chown\b.*\s{re.escape(target)}(\s|$)", owned), f"{name}: the image does not own {target}"


# --- environment -------------------------------------------------------------------------------------


def test_every_variable_compose_sets_is_one_labinov_reads() -> None:
    """A misspelt variable is silently ignored and the process falls back to its embedded default."""
    unknown = {
        f"{name}: {variable}"
        for name in compose_services()
        for variable in environment(name)
        if variable.startswith(("LABINOV_", "PROMETHEUS_")) and variable not in ENVIRONMENT_VARIABLES
    }
    assert not unknown, f"not in shared.config.ENVIRONMENT_VARIABLES: {sorted(unknown)}"


@pytest.mark.parametrize("name, service", app_containers())
def test_each_service_is_given_the_database_variable_it_reads_and_no_other(name: str, service: str) -> None:
    """No service reads another's database: one URL per container, the one its settings look for."""
    database_variables = {variable for variable in environment(name) if variable.endswith("_DATABASE_URL")}
    assert database_variables == {f"LABINOV_{service.upper()}_DATABASE_URL"}, name
    assert container_settings(name, service).database_url.startswith("postgresql"), f"{name} would fall back to SQLite"


@pytest.mark.parametrize("name, service", app_containers())
def test_containers_use_rabbitmq_postgres_and_the_mail_catcher_not_the_embedded_defaults(
    name: str, service: str
) -> None:
    """Unset or unusable values mean SQLite, an embedded broker and a local mailbox inside one container,
    invisible to the others; the settings must come out pointing at the shared servers."""
    settings = container_settings(name, service)
    assert not settings.broker_is_embedded, f"{name} would start its own embedded broker"
    assert urlsplit(settings.broker_url).scheme.startswith("amqp")
    assert settings.smtp_url is not None, f"{name} would write mail to a folder instead of the mail catcher"
    assert settings.secret_key, f"{name} would sign forms with a random key per process"
    assert settings.public_url == "http://localhost:8000"
    assert environment(name).get("PROMETHEUS_MULTIPROC_DIR") == "/metrics"


@pytest.mark.parametrize("name, service", app_containers())
def test_every_server_a_container_is_pointed_at_is_a_compose_service(name: str, service: str) -> None:
    """A URL naming a host that compose does not run fails only at the first connection."""
    settings = container_settings(name, service)
    urls = [settings.broker_url, settings.database_url, settings.smtp_url, settings.jwks_url]
    urls.append(settings.rate_limit_storage_url)
    hosts = {urlsplit(url).hostname for url in urls if url}
    assert hosts <= set(compose_services()), f"{name} points at {sorted(hosts - set(compose_services()))}"


@pytest.mark.parametrize("service", SERVICES)
def test_every_web_container_counts_rate_limits_in_the_one_redis_compose_runs(service: str) -> None:
    """With limits on and no shared storage a web process refuses to start; with one storage per container,
    scaling out would multiply each client's allowance."""
    settings = container_settings(web(service), service)
    assert settings.public_rate_limit, f"{web(service)} runs without rate limits on public writes"
    storage = urlsplit(settings.rate_limit_storage_url or "")
    assert storage.scheme == "redis" and storage.hostname == "redis", storage.geturl()
    assert "healthcheck" in compose_services()["redis"]
    assert depends_on(web(service)).get("redis") == "service_healthy", f"{web(service)} does not wait for redis"
    assert not compose_services()["redis"].get("ports"), "the counters' Redis is reachable from outside"


def test_the_rate_limits_can_be_turned_off_for_a_load_test_from_the_environment() -> None:
    env = {**STAND_IN_SECRETS, "LABINOV_PUBLIC_RATE_LIMIT": "off"}
    raw = {key: interpolate(value, env) for key, value in environment(web("registration")).items()}
    assert load_settings("registration", raw).public_rate_limit is None
    defaults = container_settings(web("registration"), "registration")
    assert defaults.public_rate_limit == "120/minute;1000/hour", "compose's default is not the code's"


def test_database_urls_use_the_credentials_postgres_is_started_with() -> None:
    postgres = environment("postgres")
    for name, service in app_containers():
        url = urlsplit(container_settings(name, service).database_url)
        assert (url.username, url.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"]), name
        assert (url.hostname, url.port or 5432) == ("postgres", 5432), name


def test_secrets_come_from_the_environment_and_never_from_the_compose_file() -> None:
    """DESIGN.md: secrets only from the environment. ``${NAME:?...}`` also stops `docker compose up` with a
    message when one is missing, instead of starting with a key nobody else knows."""
    for name in compose_services():
        for variable, value in environment(name).items():
            if variable in SECRET_VARIABLES:
                assert re.fullmatch(rf"\$\{{{variable}:\?[^}}]+\}}", value), f"{name}: {variable}={value!r}"
    assert "LABINOV_JWT_PRIVATE_KEY" in environment(web("registration")), "registration-web cannot sign tokens"
    holders = {name for name in compose_services() if "LABINOV_JWT_PRIVATE_KEY" in environment(name)}
    assert holders == {web("registration"), worker("registration")}, "only the processes that sign tokens hold the key"


@pytest.mark.parametrize("service", [service for service in SERVICES if service != "registration"])
def test_other_services_verify_tokens_with_the_keys_registration_publishes(
    service: str, flask_apps: dict[str, Flask]
) -> None:
    for name in (web(service), worker(service)):
        url = urlsplit(container_settings(name, service).jwks_url or "")
        registration_port = container_settings(name, service).service_ports["registration"]
        assert (url.hostname, url.port) == (web("registration"), registration_port), f"{name}: {url.geturl()}"
        assert url.path in routes(flask_apps["registration"]), f"{name}: registration has no route {url.path}"


def test_every_container_agrees_on_every_service_port() -> None:
    """The gateway, health checks and JWKS URL name ports; a container that computes another would not listen
    where the others look."""
    ports = {name: container_settings(name, service).service_ports for name, service in app_containers()}
    assert len({tuple(sorted(p.items())) for p in ports.values()}) == 1, ports


# --- commands ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, service", app_containers())
def test_commands_are_labinov_subcommands_for_their_own_service(name: str, service: str) -> None:
    """A renamed subcommand or a wrong service argument would leave the container restarting forever."""
    invocations = labinov_invocations(name)
    assert invocations, f"{name} runs no labinov command"
    for subcommand, *arguments in invocations:
        assert subcommand in labinov_cli.commands, f"{name}: `labinov {subcommand}` does not exist"
        assert arguments and set(arguments) <= set(service_choices(subcommand)), (
            f"{name}: `labinov {subcommand}` has no service {arguments}"
        )
        assert arguments == [service], f"{name} runs `labinov {subcommand}` for {arguments}, not {service}"
    process = "web" if name == web(service) else "worker"
    assert invocations[-1][0] == process, f"{name} ends with `labinov {invocations[-1][0]}`, not `{process}`"


@pytest.mark.parametrize("service", SERVICES)
def test_the_web_container_migrates_its_database_before_serving(service: str) -> None:
    assert labinov_invocations(web(service)) == [["migrate", service], ["web", service]]
    command = compose_services()[web(service)]["command"]
    assert "exec labinov web" in (command if isinstance(command, str) else command[-1]), (
        "without exec, sh stays PID 1 and ignores SIGTERM: stopping the container takes 10 s and a SIGKILL"
    )


# --- health checks and start order --------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_web_health_check_asks_the_service_its_readiness_on_its_own_port(
    service: str, flask_apps: dict[str, Flask]
) -> None:
    url = healthcheck_url(web(service))
    port = container_settings(web(service), service).service_ports[service]
    assert (url.hostname, url.port) == ("localhost", port), f"{web(service)} listens on {port}, checked {url.netloc}"
    assert url.path == f"/{service}/health/ready"
    assert url.path in routes(flask_apps[service]), f"{service}'s app has no route {url.path}"


def test_every_dependency_exists_and_is_health_checked_when_waited_for() -> None:
    """`condition: service_healthy` on a service without a health check makes `docker compose up` fail."""
    services = compose_services()
    for name in services:
        for target, condition in depends_on(name).items():
            assert target in set(services), f"{name} depends on {target}, which compose does not run"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}, which has no health check"


@pytest.mark.parametrize("name, service", app_containers())
def test_app_containers_wait_for_a_healthy_broker_and_database(name: str, service: str) -> None:
    assert depends_on(name).get("rabbitmq") == "service_healthy", name
    assert depends_on(name).get("postgres") == "service_healthy", name


@pytest.mark.parametrize("service", SERVICES)
def test_the_worker_starts_only_after_its_web_container_has_migrated(service: str) -> None:
    """The web container is healthy only after `labinov migrate`; a worker started earlier meets no tables."""
    assert depends_on(worker(service)).get(web(service)) == "service_healthy"


def test_the_gateway_waits_for_every_healthy_web_container() -> None:
    for service in SERVICES:
        assert depends_on("gateway").get(web(service)) == "service_healthy", f"the gateway does not wait for {service}"


@pytest.mark.parametrize("service", SERVICES)
def test_a_services_web_and_worker_share_one_metrics_volume(service: str) -> None:
    """/<service>/metrics sums every process that wrote to PROMETHEUS_MULTIPROC_DIR; the worker's counters
    are there only if both containers mount the same volume, and no other service's are."""
    volume = named_volume(web(service), "/metrics")
    assert volume and volume == named_volume(worker(service), "/metrics"), service
    assert volume in compose()["volumes"]
    others = {named_volume(name, "/metrics") for name, other in app_containers() if other != service}
    assert volume not in others, f"{service} shares its metrics volume with another service"


# --- gateway -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_the_gateway_routes_each_prefix_to_its_web_container_without_rewriting(service: str) -> None:
    """Every route already carries its /<service>/ prefix, so the gateway must pass the URI on unchanged."""
    location = nginx_locations().get(f"/{service}/")
    assert location is not None, f"deploy/nginx.conf has no `location /{service}/`"
    assert "rewrite" not in location, f"location /{service}/ rewrites the URI"
    targets = re.findall(r"proxy_pass\s+(\S+);", location)
    assert len(targets) == 1, f"location /{service}/ has proxy_pass {targets}"
    target = urlsplit(targets[0])
    assert target.path == "", f"proxy_pass {targets[0]} replaces the /{service}/ prefix with {target.path!r}"
    servers = nginx_upstreams().get(target.netloc, [target.netloc])
    port = container_settings(web(service), service).service_ports[service]
    assert servers == [f"{web(service)}:{port}"], f"/{service}/ goes to {servers}, the web listens on {port}"


def test_the_gateway_sends_the_front_page_to_the_participant_portal() -> None:
    assert re.search(r"return\s+30[12378]\s+/registration/;", nginx_locations().get("= /", "")), (
        "deploy/nginx.conf does not redirect / to /registration/"
    )


def nginx_size(value: str) -> int:
    """nginx's ``64k`` / ``1m`` / ``1024`` as bytes."""
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def test_the_gateway_refuses_a_body_the_services_would_refuse_with_their_problem_json() -> None:
    """A body over the services' limit must be a 413 problem+json from nginx, not a 502 (the service answers
    413 without reading the body, and nginx, still sending it, would lose the answer)."""
    config = nginx_config()
    limit = re.search(r"client_max_body_size\s+(\S+);", config)
    assert limit and nginx_size(limit.group(1)) == MAX_BODY_BYTES, "client_max_body_size is not the services' limit"
    page = re.search(r"error_page\s+413\s+(@\w+);", config)
    assert page, "deploy/nginx.conf leaves nginx's own HTML page for 413"
    block = config[config.index(f"location {page.group(1)}") :]
    assert re.search(r"default_type\s+application/problem\+json;", block.split("}")[0])
    body = json.loads(re.search(r"return\s+413\s+'([^']*)';", block).group(1))
    assert body["status"] == 413 and body["type"].startswith("https://labinov.example/problems/")
    assert str(MAX_BODY_BYTES) in body["detail"]


def test_the_gateway_lets_an_agency_s_import_file_through_up_to_the_import_route_s_own_limit() -> None:
    from services.registration.api import IMPORT_MAX_BYTES

    block = re.search(r"location\s+~\s+(\S*imports\$)\s*\{([^{}]*)\}", nginx_config())
    assert block, "deploy/nginx.conf has no location for the import routes (nginx would refuse files over 64 KiB)"
    for path in ("/registration/api/v1/sessions/abc/imports", "/registration/admin/sessions/abc/imports"):
        assert re.match(block.group(1), path), path
    limit = re.search(r"client_max_body_size\s+(\S+);", block.group(2))
    assert limit and nginx_size(limit.group(1)) >= IMPORT_MAX_BYTES
    assert "proxy_pass http://registration_web;" in block.group(2)


@pytest.mark.parametrize("name, service", app_containers())
def test_the_services_trust_the_one_gateway_that_appends_the_callers_address(name: str, service: str) -> None:
    """Per-client limits count by the address nginx appends to X-Forwarded-For: one hop, the last entry."""
    assert re.search(r"proxy_set_header\s+X-Forwarded-For\s+\$proxy_add_x_forwarded_for;", nginx_config())
    assert container_settings(name, service).trusted_proxy_hops == 1
    assert not compose_services()[name].get("ports"), f"{name} is reachable around the gateway"


def test_the_gateway_listens_on_the_published_port() -> None:
    port = urlsplit(container_settings(web("registration"), "registration").public_url).port
    assert re.search(rf"^\s*listen\s+{port};", nginx_config(), re.MULTILINE)
    assert f"{port}:{port}" in compose_services()["gateway"]["ports"]


# --- databases ---------------------------------------------------------------------------------------


def test_the_postgres_init_script_creates_every_database_the_services_name() -> None:
    """The postgres image creates only POSTGRES_USER's database; a service whose database the init script
    forgets fails its first migration."""
    script = bind_mount("postgres", "/docker-entrypoint-initdb.d/").read_text()
    created = set(re.findall(r"CREATE\s+DATABASE\s+\"?(\w+)\"?", script, re.IGNORECASE))
    for name, service in app_containers():
        database = urlsplit(container_settings(name, service).database_url).path.lstrip("/")
        assert database in created, f"{name} uses database {database!r}, which the init script does not create"
