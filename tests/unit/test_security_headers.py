"""Security headers (shared/http.py): on every answer of every service — pages, API docs, API, errors."""

from __future__ import annotations

import re

import pytest

from shared.config import SERVICES
from shared.http import DOCS_STARTER

EXPECTED = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def paths(service: str) -> list[str]:
    return [
        f"/{service}/",  # the service's page
        f"/{service}/api/v1/docs",
        f"/{service}/api/v1/openapi.json",
        f"/{service}/api/v1/docs/assets/swagger-ui-bundle.js",
        f"/{service}/health/live",
        f"/{service}/no-such-page",
    ]


@pytest.mark.parametrize("service", SERVICES)
def test_every_kind_of_answer_carries_the_security_headers(app_for, service):
    client = app_for(service).test_client()
    for path in paths(service):
        response = client.get(path)
        assert response.status_code < 500, path
        for header, value in EXPECTED.items():
            assert response.headers.get(header) == value, (path, header)
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy, path
        assert re.search(r"script-src 'self'(;|$)", policy), f"{path}: scripts are not limited to the service"


def test_the_docs_page_has_no_inline_script_and_starts_swagger_ui_from_a_file_the_service_serves(app_for):
    client = app_for("registration").test_client()
    page = client.get("/registration/api/v1/docs").get_data(as_text=True)

    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.DOTALL)
    assert scripts and all(body.strip() == "" and "src=" in attributes for attributes, body in scripts)
    sources = re.findall(r'<script src="([^"]+)"', page)
    assert f"/registration/api/v1/docs/assets/{DOCS_STARTER}" in sources
    for source in sources:
        answer = client.get(source)
        assert answer.status_code == 200, source
        assert "javascript" in answer.mimetype, source
    assert 'data-spec-url="/registration/api/v1/openapi.json"' in page
    starter = client.get(f"/registration/api/v1/docs/assets/{DOCS_STARTER}").get_data(as_text=True)
    assert "SwaggerUIBundle" in starter and "specUrl" in starter


def test_the_token_answer_is_never_stored_by_a_cache(registration_client):
    response = registration_client.post(
        "/registration/api/v1/auth/token", json={"email": "nobody@kaltaraprov.go.id", "password": "x" * 12}
    )
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("service", SERVICES)
def test_api_answers_are_no_store_and_the_docs_assets_stay_cacheable(app_for, service):
    client = app_for(service).test_client()
    spec = client.get(f"/{service}/api/v1/openapi.json").get_json()
    api_gets = [path for path, item in spec["paths"].items() if "get" in item and "{" not in path]
    assert api_gets
    for path in api_gets:  # answered or refused (401): an API answer either way
        assert client.get(path).headers.get("Cache-Control") == "no-store", path
    asset = client.get(f"/{service}/api/v1/docs/assets/swagger-ui.css")
    assert "max-age=86400" in asset.headers["Cache-Control"]
