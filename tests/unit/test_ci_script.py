"""`.ci/run` is what CI executes on a fresh clone: it must parse, start the servers it needs, and run `make test`."""

from __future__ import annotations

import subprocess
from pathlib import Path

CI_RUN = Path(__file__).resolve().parents[2] / ".ci" / "run"


def test_the_ci_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(CI_RUN)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_ci_script_starts_the_servers_and_runs_make_test_as_its_last_command():
    lines = [line.strip() for line in CI_RUN.read_text().splitlines() if line.strip() and not line.startswith("#")]
    text = "\n".join(lines)
    assert "pg_ctlcluster --skip-systemctl-redirect" in text and "rabbitmq-server -detached" in text
    assert "export CI=true" in text and "set -euo pipefail" in text
    assert lines[-1] == "make test"
