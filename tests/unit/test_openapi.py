"""Each service's OpenAPI document: complete, under the service's prefix, and saying who may call what."""

from __future__ import annotations

import re

import pytest

from shared.config import SERVICES

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(params=SERVICES)
def service_and_app(request, app_for):
    return request.param, app_for(request.param)


def document(service, app) -> dict:
    response = app.test_client().get(f"/{service}/api/v1/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def refs_in(node) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in refs_in(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs_in(value)]
    return []


def unresolved_refs(spec: dict) -> list[str]:
    missing = []
    for ref in refs_in(spec):
        target = spec
        for part in ref.removeprefix("#/").split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        if target is None:
            missing.append(ref)
    return missing


def test_the_document_is_a_well_formed_openapi_3_document(service_and_app):
    spec = document(*service_and_app)

    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] and spec["info"]["version"]
    assert spec["paths"]
    assert refs_in(spec), "no $ref at all: the next check would prove nothing"
    assert unresolved_refs(spec) == []
    for path, method, operation in operations(spec):
        assert operation.get("responses"), f"{method} {path} documents no response"
        declared = {p["name"] for p in spec["paths"][path].get("parameters", []) + operation.get("parameters", [])}
        assert set(re.findall(r"{(\w+)}", path)) <= declared, f"{method} {path} leaves a path parameter undeclared"


def test_every_path_is_under_the_service_api_prefix(service_and_app):
    service, app = service_and_app
    assert [p for p in document(service, app)["paths"] if not p.startswith(f"/{service}/api/v1/")] == []


def test_every_api_route_is_documented(service_and_app):
    service, app = service_and_app
    documented = {(path, method.upper()) for path, method, _ in operations(document(service, app))}
    routed = {
        (re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), method)
        for rule in app.url_map.iter_rules()
        if "_api." in rule.endpoint
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routed - documented == set()


def test_every_operation_says_who_may_call_it(service_and_app):
    spec = document(*service_and_app)
    silent = [
        f"{m} {p}" for p, m, op in operations(spec) if not op.get("description", "").startswith("**Who may call:**")
    ]
    assert silent == []


def test_operations_that_need_a_role_list_the_bearer_scheme_and_public_ones_list_none(service_and_app):
    spec = document(*service_and_app)

    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    schemes = spec["components"]["securitySchemes"]
    for path, method, operation in operations(spec):
        public = operation["description"].startswith("**Who may call:** anyone")
        secret = re.search(r"with the shared secret in `([^`]+)`", operation["description"])
        expected = [] if public else [{secret.group(1): []}] if secret else [{"bearerAuth": []}]
        assert operation.get("security") == expected, f"{method} {path}"
        if secret:  # another system's header, described as such
            assert schemes[secret.group(1)] == {"type": "apiKey", "in": "header", "name": secret.group(1)}


def test_the_document_names_the_roles_the_view_enforces(service_and_app):
    service, app = service_and_app
    spec = document(service, app)
    for rule in app.url_map.iter_rules():
        if "_api." not in rule.endpoint:
            continue
        roles = app.view_functions[rule.endpoint].labinov_roles
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            description = spec["paths"][path][method.lower()]["description"]
            assert all(role in description for role in roles), f"{method} {path}: {description} vs {roles}"
