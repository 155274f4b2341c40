"""The layers of the code, held by tools: what a worker process loads, and the import contracts.

The contracts themselves live in pyproject.toml (``[tool.importlinter]``) and ``make lint`` checks them; the
test runs them too, so a broken layer fails ``pytest`` alone, naming the import chain.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import SERVICES

ROOT = Path(__file__).resolve().parents[2]
WEB_ONLY = ("flask", "flask_smorest", "apispec", "swagger_ui_bundle")


@pytest.mark.parametrize("service", SERVICES)
def test_a_worker_process_does_not_load_the_web_framework(service):
    program = (
        f"import sys, services.{service}.worker\nprint(' '.join(name for name in {WEB_ONLY!r} if name in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert loaded == [], f"services.{service}.worker loads {loaded}"


def test_the_import_contracts_of_pyproject_hold():
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
