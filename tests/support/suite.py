"""The suite's real processes for end-to-end tests: gunicorn web processes and workers, as in production.

Each process writes its output to ``<tmp>/logs/<name>.log``; a failing test shows the tails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from services.cli import web_command
from shared.config import SERVICES, embedded_broker_socket
from shared.messaging.broker import start_embedded_broker
from tests.support.servers import free_port_block
from tests.support.waiting import ConsumerOutcome, consumer_outcomes, wait_until

ORGANISER = {"email": "panitia@kaltaraprov.go.id", "password": "rahasia-panitia-2017"}


def participant(i: int, **overrides) -> dict:
    """A valid participant; ``i`` makes the NIP and e-mail unique."""
    seq = i % 999 + 1
    day = 1 + (i // 999) % 28
    data = {
        "name": f"Peserta {i}",
        "nip": f"198503{day:02d}201001{1 + i % 2}{seq:03d}",
        "email": f"peserta{i}@kaltaraprov.go.id",
        "phone": f"0812{i:08d}"[:13],
        "opd": "Dinas Komunikasi dan Informatika",
    }
    data.update(overrides)
    return data


class Suite:
    def __init__(
        self,
        root: Path,
        broker_url: str | None = None,
        database_urls: dict[str, str] | None = None,
        smtp_url: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.data_dir = root / "var"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port_block(4)
        self.env = {
            **os.environ,
            "LABINOV_DATA_DIR": str(self.data_dir),
            "LABINOV_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
            "LABINOV_PUBLIC_RATE_LIMIT": "off",  # a rush sends hundreds from one address; RabbitMQ runs hold no Redis
            **(extra_env or {}),
        }
        if broker_url:
            self.env["LABINOV_BROKER_URL"] = broker_url
        for service, url in (database_urls or {}).items():
            self.env[f"LABINOV_{service.upper()}_DATABASE_URL"] = url
        if smtp_url:
            self.env["LABINOV_SMTP_URL"] = smtp_url
        self.broker_is_embedded = broker_url is None
        self.processes: dict[str, subprocess.Popen] = {}
        self.workers_of: dict[str, list[str]] = {service: [] for service in SERVICES}  # process names
        self._broker: subprocess.Popen | None = None
        self._organiser_token: str | None = None

    # -- processes ----------------------------------------------------------------------------------------

    def service_port(self, service: str) -> int:
        return self.port + 1 + SERVICES.index(service)

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.service_port(service)}/{service}/{path.lstrip('/')}"

    def labinov(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def _spawn(self, name: str, command: list[str], service: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        metrics_dir = self.data_dir / "metrics" / service  # shared by the service's web and workers
        metrics_dir.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def start_broker(self) -> None:
        if self.broker_is_embedded and self._broker is None:
            self._broker = start_embedded_broker(embedded_broker_socket(self.data_dir))

    def start_web(self, service: str) -> None:
        self._spawn(f"{service}-web", web_command(service, "127.0.0.1", self.service_port(service), workers=2), service)

    def start_worker(self, service: str, name: str | None = None, module: str = "services.cli") -> subprocess.Popen:
        """Start a worker of ``service``; ``module`` may name a test wrapper that runs the real worker."""
        command = [sys.executable, "-m", module, "worker", service]
        name = name or f"{service}-worker"
        self.workers_of[service].append(name)
        return self._spawn(name, command, service)

    # -- evidence: what the workers report ----------------------------------------------------------------

    def outcomes(self, service: str, **match: str) -> list[ConsumerOutcome]:
        """What ``service``'s workers (every one started so far) reported about the events they consumed,
        filtered by ``event_id=``, ``event_type=`` or ``outcome=``."""
        logs = {name: self.logs / f"{name}.log" for name in self.workers_of[service]}
        return [o for o in consumer_outcomes(logs) if all(getattr(o, k) == v for k, v in match.items())]

    def wait_for_outcomes(self, service: str, count: int, timeout: float = 60, **match: str) -> list[ConsumerOutcome]:
        """Wait until ``service``'s workers have reported at least ``count`` outcomes matching ``match``."""
        return wait_until(
            lambda: (found := self.outcomes(service, **match)) and len(found) >= count and found,
            timeout=timeout,
            what=f"{count} consumer outcome(s) {match or ''} from {service}'s workers",
        )

    def deliveries(self) -> list[dict]:
        """Every delivery the notification service holds, as its API lists them to an organiser."""
        response = requests.get(
            self.url("notification", "api/v1/deliveries"),
            params={"limit": 500},
            headers=self.organiser_headers(),
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def wait_for_mail_to_settle(self, count: int, timeout: float = 60) -> list[dict]:
        """Wait until ``count`` deliveries exist and none is queued or being sent: after that no further mail can go."""
        return wait_until(
            lambda: (
                (found := self.deliveries())
                and len(found) >= count
                and all(d["status"] not in ("queued", "sending") for d in found)
                and found
            ),
            timeout=timeout,
            what=f"{count} deliveries, none queued or sending",
        )

    def metric(self, service: str, name: str, **labels: str) -> float:
        """The current value of a Prometheus sample on ``service``'s /metrics (0 if absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        text = requests.get(self.url(service, "metrics"), timeout=5).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def start_alone(self, service: str, workers: int = 3) -> Suite:
        """Migrate and start only ``service``'s web process (gunicorn with ``workers`` workers), no worker:
        for tests that look at one service's web tier under load."""
        self.start_broker()
        self.labinov("migrate")
        self.labinov("user", "create", "--role", "organiser", "--name", "Panitia", *self._organiser_args())
        self._spawn(
            f"{service}-web", web_command(service, "127.0.0.1", self.service_port(service), workers=workers), service
        )
        wait_until(
            lambda: requests.get(self.url(service, "health/ready"), timeout=2).status_code == 200,
            timeout=60,
            what=f"{service} to be ready",
        )
        return self

    def start(self, workers: tuple[str, ...] = SERVICES) -> Suite:
        """Migrate, then start every web process and the named services' workers; wait until ready."""
        self.start_broker()
        self.labinov("migrate")
        self.labinov("user", "create", "--role", "organiser", "--name", "Panitia", *self._organiser_args())
        for service in SERVICES:
            self.start_web(service)
        for service in workers:
            self.start_worker(service)
        for service in SERVICES:
            wait_until(
                lambda s=service: requests.get(self.url(s, "health/ready"), timeout=2).status_code == 200,
                timeout=60,
                what=f"{service} to be ready",
            )
        return self

    @staticmethod
    def _organiser_args() -> list[str]:
        return ["--email", ORGANISER["email"], "--password", ORGANISER["password"]]

    def kill(self, name: str) -> None:
        """SIGKILL: the process gets no chance to finish or ack anything."""
        process = self.processes.pop(name)
        process.kill()
        process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()
        if self._broker is not None:
            self._broker.terminate()
            self._broker.wait(10)
            self._broker = None

    def log_tails(self, lines: int = 30) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    # -- the API, as a client would use it ------------------------------------------------------------------

    def organiser_token(self) -> str:
        response = requests.post(self.url("registration", "api/v1/auth/token"), json=ORGANISER, timeout=10)
        response.raise_for_status()
        return response.json()["access_token"]

    def organiser_headers(self) -> dict[str, str]:
        """An organiser's bearer header; signed in once per suite (tests poll with it)."""
        if self._organiser_token is None:
            self._organiser_token = self.organiser_token()
        return {"Authorization": f"Bearer {self._organiser_token}"}

    def create_session(self, capacity: int = 30, title: str = "Sosialisasi Laboratorium Inovasi") -> str:
        response = requests.post(
            self.url("registration", "api/v1/sessions"),
            json={
                "title": title,
                "starts_at": "2027-03-01T09:00:00+08:00",
                "ends_at": "2027-03-01T12:00:00+08:00",
                "location": "Ruang Rapat Lantai 1, Kantor Gubernur Kaltara",
                "capacity": capacity,
            },
            headers=self.organiser_headers(),
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def register(self, session_id: str, person: dict) -> requests.Response:
        return requests.post(
            self.url("registration", f"api/v1/sessions/{session_id}/registrations"), json=person, timeout=15
        )
