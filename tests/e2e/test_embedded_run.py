"""`labinov run` (what `make run` starts): the whole suite on the embedded defaults, no servers installed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import requests

from tests.support.servers import free_port_block
from tests.support.suite import ORGANISER, participant
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


class RunCommand:
    def __init__(self, data_dir, smtp_url=None):
        self.port = free_port_block(4)
        self.env = {**os.environ, "LABINOV_DATA_DIR": str(data_dir), "LABINOV_PORT": str(self.port)}
        for name in list(self.env):
            if name.endswith("_DATABASE_URL") or name == "LABINOV_BROKER_URL":
                del self.env[name]
        if smtp_url:
            self.env["LABINOV_SMTP_URL"] = smtp_url
        self.log = data_dir.parent / "run.log"
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run"],
            env=self.env,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until(
            lambda: requests.get(self.url("/registration/health/ready"), timeout=2).ok,
            timeout=60,
            what="the gateway to route to a ready registration service",
        )
        return self

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        return self.process.wait(30)


@pytest.fixture
def run_command(tmp_path):
    commands = []

    def make(**kwargs):
        command = RunCommand(tmp_path / "var", **kwargs)
        commands.append(command)
        return command

    yield make
    for command in commands:
        if command.process and command.process.poll() is None:
            command.process.kill()


def _organiser_headers(run):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "user",
            "create",
            "--role",
            "organiser",
            "--email",
            ORGANISER["email"],
            "--password",
            ORGANISER["password"],
        ],
        env=run.env,
        check=False,
        capture_output=True,
    )
    token = requests.post(run.url("/registration/api/v1/auth/token"), json=ORGANISER, timeout=10).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


def _create_session(run, headers):
    response = requests.post(
        run.url("/registration/api/v1/sessions"),
        headers=headers,
        timeout=10,
        json={
            "title": "Coaching Clinic Inovasi",
            "starts_at": "2027-03-02T09:00:00+08:00",
            "ends_at": "2027-03-02T15:00:00+08:00",
            "location": "Tanjung Selor",
            "capacity": 10,
        },
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_make_run_mails_a_registration_over_smtp_on_the_embedded_defaults(run_command, smtp_server):
    run = run_command(smtp_url=smtp_server.url).start()
    headers = _organiser_headers(run)
    session_id = _create_session(run, headers)

    response = requests.post(
        run.url(f"/registration/api/v1/sessions/{session_id}/registrations"),
        json=participant(7, name="Budi Santoso", email="budi@kaltaraprov.go.id"),
        timeout=10,
    )

    assert response.status_code == 201, response.text
    mail = wait_until(lambda: smtp_server.to("budi@kaltaraprov.go.id"), what="the confirmation mail")
    assert "Budi Santoso" in mail[0].get_body(preferencelist=("plain",)).get_content()
    assert requests.get(run.url("/"), allow_redirects=False, timeout=5).headers["Location"].endswith("/registration/")
    assert run.stop() == 0, run.log.read_text()[-3000:]


def test_make_run_without_smtp_keeps_mail_in_the_local_mailbox_and_keeps_data_across_restarts(run_command):
    run = run_command().start()
    headers = _organiser_headers(run)
    session_id = _create_session(run, headers)
    response = requests.post(
        run.url(f"/registration/api/v1/sessions/{session_id}/registrations"),
        json=participant(8, name="Rina Marlina"),
        timeout=10,
    )
    assert response.status_code == 201, response.text
    signed_in = {"labinov_auth": headers["Authorization"].removeprefix("Bearer ")}  # the mailbox is for organisers
    assert "Rina Marlina" not in requests.get(run.url("/notification/mailbox"), timeout=5).text
    wait_until(
        lambda: "Rina Marlina" in requests.get(run.url("/notification/mailbox"), cookies=signed_in, timeout=5).text,
        what="the mail on the local mailbox page",
    )
    assert run.stop() == 0

    again = run_command().start()
    page = requests.get(again.url("/registration/"), timeout=5).text
    assert "Coaching Clinic Inovasi" in page
    signed_in = {"labinov_auth": _organiser_headers(again)["Authorization"].removeprefix("Bearer ")}
    assert "Rina Marlina" in requests.get(again.url("/notification/mailbox"), cookies=signed_in, timeout=5).text
    assert again.stop() == 0


def test_user_create_finds_the_running_suite_from_its_folder_and_refuses_another_folder(run_command, tmp_path):
    """The README's second terminal: `labinov user create` where `make run` runs writes into that suite; run
    from another folder it says so, and creates no empty database there."""
    run = run_command().start()
    env = {name: value for name, value in run.env.items() if name != "LABINOV_DATA_DIR"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    arguments = [sys.executable, "-m", "services.cli", "user", "create", "--role", "organiser"]
    arguments += ["--email", ORGANISER["email"], "--password", ORGANISER["password"]]

    refused = subprocess.run(arguments, env=env, cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert f"No Labinov suite is in the data folder {elsewhere / 'var'}" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (elsewhere / "var").exists()

    created = subprocess.run(arguments, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    assert f"Data folder: {tmp_path / 'var'}" in created.stdout
    assert requests.post(run.url("/registration/api/v1/auth/token"), json=ORGANISER, timeout=10).status_code == 200
    assert run.stop() == 0
