"""The rate-limit settings and the decorator's promises, without a Redis (``shared/ratelimit.py``)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask_smorest import Blueprint

from shared.config import (
    DEFAULT_PUBLIC_RATE_LIMIT,
    DEFAULT_PUBLIC_RATE_LIMIT_PER_CLIENT,
    ENVIRONMENT_VARIABLES,
    ConfigurationError,
    embedded_broker_socket,
    load_settings,
)
from shared.http import ProblemApi, client_address
from shared.idempotency import idempotent
from shared.ratelimit import MARK, install_rate_limits, public_write_limit


def test_public_writes_are_limited_by_default_generously_for_one_office():
    settings = load_settings("registration", {})
    assert settings.public_rate_limit == DEFAULT_PUBLIC_RATE_LIMIT == "120/minute;1000/hour"
    assert settings.public_rate_limit_per_client == DEFAULT_PUBLIC_RATE_LIMIT_PER_CLIENT == "300/minute;3000/hour"


def test_a_limits_string_is_taken_as_written():
    settings = load_settings("registration", {"LABINOV_PUBLIC_RATE_LIMIT": "60/minute;600/hour"})
    assert settings.public_rate_limit == "60/minute;600/hour"


@pytest.mark.parametrize("value", ["off", "OFF", " off "])
def test_off_turns_both_public_write_limits_off(value):
    settings = load_settings("registration", {"LABINOV_PUBLIC_RATE_LIMIT": value})
    assert settings.public_rate_limit is None
    assert settings.public_rate_limit_per_client is None


def test_the_limit_in_all_can_be_turned_off_alone():
    settings = load_settings("registration", {"LABINOV_PUBLIC_RATE_LIMIT_PER_CLIENT": "off"})
    assert settings.public_rate_limit == DEFAULT_PUBLIC_RATE_LIMIT
    assert settings.public_rate_limit_per_client is None


@pytest.mark.parametrize("name", ["LABINOV_PUBLIC_RATE_LIMIT", "LABINOV_PUBLIC_RATE_LIMIT_PER_CLIENT"])
@pytest.mark.parametrize("value", ["lots", "60/fortnight", "-1/minute", "60/minute;", "0/minute"])
def test_a_bad_limit_stops_start_up_naming_the_variable(name, value):
    with pytest.raises(ConfigurationError, match=name):
        load_settings("registration", {name: value})


def test_a_bad_limit_stops_the_labinov_command_with_one_line_naming_the_variable():
    from click.testing import CliRunner

    from services.cli import main

    result = CliRunner().invoke(main, ["web", "registration"], env={"LABINOV_PUBLIC_RATE_LIMIT": "many/minute"})

    assert result.exit_code == 1
    assert "LABINOV_PUBLIC_RATE_LIMIT" in result.output
    assert "Traceback" not in result.output


def test_an_embedded_run_counts_in_the_embedded_brokers_redis(tmp_path):
    settings = load_settings("registration", {"LABINOV_DATA_DIR": str(tmp_path)})
    assert settings.rate_limit_storage_url == f"redis+unix://{embedded_broker_socket(tmp_path)}"


def test_a_redis_broker_holds_the_counters_too():
    settings = load_settings("registration", {"LABINOV_BROKER_URL": "redis://broker:6379/0"})
    assert settings.rate_limit_storage_url == "redis://broker:6379/0"


def test_a_rabbitmq_broker_holds_no_counters_unless_a_redis_is_named():
    assert (
        load_settings("registration", {"LABINOV_BROKER_URL": "amqp://guest:guest@rabbit//"}).rate_limit_storage_url
        is None
    )
    named = load_settings(
        "registration",
        {"LABINOV_BROKER_URL": "amqp://guest:guest@rabbit//", "LABINOV_RATE_LIMIT_STORAGE_URL": "redis://redis:6379/0"},
    )
    assert named.rate_limit_storage_url == "redis://redis:6379/0"


@pytest.mark.parametrize("value", ["memory://", "memory:///"])
def test_per_process_memory_is_refused_as_the_storage(value):
    with pytest.raises(ConfigurationError, match="LABINOV_RATE_LIMIT_STORAGE_URL") as refused:
        load_settings("registration", {"LABINOV_RATE_LIMIT_STORAGE_URL": value})
    assert "every web process" in str(refused.value)


def test_a_storage_that_is_not_redis_is_refused_naming_the_variable_and_hiding_the_password():
    with pytest.raises(ConfigurationError, match="LABINOV_RATE_LIMIT_STORAGE_URL") as refused:
        load_settings("registration", {"LABINOV_RATE_LIMIT_STORAGE_URL": "memcached://u:s3cret@cache:11211"})
    assert "s3cret" not in str(refused.value)


def test_every_rate_limit_setting_is_in_the_list_of_variables():
    for name in ("LABINOV_PUBLIC_RATE_LIMIT", "LABINOV_PUBLIC_RATE_LIMIT_PER_CLIENT", "LABINOV_RATE_LIMIT_STORAGE_URL"):
        assert name in ENVIRONMENT_VARIABLES
    assert "120/minute;1000/hour" in ENVIRONMENT_VARIABLES["LABINOV_PUBLIC_RATE_LIMIT"]


def test_a_web_process_with_limits_on_and_nowhere_shared_to_count_refuses_to_start():
    settings = load_settings("registration", {"LABINOV_BROKER_URL": "amqp://guest:guest@rabbit//"})
    with pytest.raises(ConfigurationError) as refused:
        install_rate_limits(Flask(__name__), settings, client_address)
    assert "LABINOV_RATE_LIMIT_STORAGE_URL" in str(refused.value)
    assert "LABINOV_PUBLIC_RATE_LIMIT=off" in str(refused.value)


def test_limits_turned_off_install_nothing():
    settings = load_settings(
        "registration", {"LABINOV_BROKER_URL": "amqp://guest:guest@rabbit//", "LABINOV_PUBLIC_RATE_LIMIT": "off"}
    )
    app = Flask(__name__)
    assert install_rate_limits(app, settings, client_address) is None
    assert "limiter" not in app.extensions


def _documented_app() -> dict:
    app = Flask(__name__)
    app.config.update(API_TITLE="t", API_VERSION="v1", OPENAPI_VERSION="3.0.3")
    api = ProblemApi(app)
    blp = Blueprint("things", __name__)

    @blp.post("/sessions/<session_id>/registrations")
    @public_write_limit
    @idempotent
    @blp.response(201)
    def register(session_id):
        return {}

    api.register_blueprint(blp)
    assert getattr(app.view_functions["things.register"], MARK)
    return api.spec.to_dict()


def test_a_limited_operation_documents_its_429_with_retry_after_and_the_problem_shape():
    spec = _documented_app()
    operation = spec["paths"]["/sessions/{session_id}/registrations"]["post"]

    too_many = operation["responses"]["429"]
    assert "Retry-After" in too_many["headers"]
    assert too_many["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert "Problem" in spec["components"]["schemas"]
    assert "201" in operation["responses"], "the operation's own answers stay"
    assert [p["name"] for p in operation["parameters"] if p["in"] == "header"] == ["Idempotency-Key"]
