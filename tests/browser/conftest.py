"""Browser tests: Playwright for Python driving Debian's Chromium (``/usr/bin/chromium``) against the real suite.

The suite runs as in ``make run`` — gunicorn web processes of all three services behind the development
gateway, on the embedded defaults — so the browser sees one address, one cookie jar and the real CSP.
Playwright's own browser downloads are never used (``playwright install`` cannot fetch here): the tests launch
the distribution's Chromium. Without it, or without the ``playwright`` package, the tests are skipped with the
reason — and fail under CI, like the tests of the real servers (``tests.support.servers.missing``); ``.ci/run``
installs the package.

``LABINOV_SCREENSHOT_DIR``, when set, keeps the screenshots the tests take (portal and form at 360 px).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import requests

from tests.support.servers import missing
from tests.support.suite import Suite
from tests.support.waiting import wait_until

CHROMIUM = Path("/usr/bin/chromium")
PHONE = {"width": 360, "height": 740}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    suite = Suite(tmp_path_factory.mktemp("browser"), extra_env={"LABINOV_PUBLIC_RATE_LIMIT": "off"})
    try:
        suite.start(workers=())
        suite._spawn("gateway", [sys.executable, "-m", "services.cli", "gateway"], "registration")
        wait_until(
            lambda: requests.get(f"http://127.0.0.1:{suite.port}/registration/health/live", timeout=2).ok,
            timeout=60,
            what="the gateway to reach registration",
        )
        yield suite
    except BaseException:
        print(suite.log_tails())
        raise
    finally:
        suite.stop()


@pytest.fixture(scope="module")
def site(suite) -> str:
    """The one address people open (the gateway)."""
    return f"http://127.0.0.1:{suite.port}"


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def phone(chromium):
    """A fresh browser (its own cookies) with a 360-px-wide phone screen."""
    context = chromium.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def screenshot(tmp_path):
    """``screenshot(page, "portal")``: a full-page PNG under the test's folder (and LABINOV_SCREENSHOT_DIR)."""

    def take(page, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        keep = os.environ.get("LABINOV_SCREENSHOT_DIR")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)
        return path

    return take
