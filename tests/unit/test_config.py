"""Settings from the environment (shared/config.py): embedded defaults, and a named error for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import ConfigurationError, load_settings


def test_embedded_defaults_put_everything_under_the_data_folder(tmp_path):
    settings = load_settings("notification", env={"LABINOV_DATA_DIR": str(tmp_path)})

    assert settings.data_dir == tmp_path.resolve()
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'notification.sqlite3'}"
    assert settings.broker_url.startswith("redis+socket://")
    assert Path(settings.broker_url.removeprefix("redis+socket://")).is_relative_to(tmp_path.resolve())
    assert settings.broker_is_embedded is True
    assert settings.smtp_url is None


def test_each_service_gets_its_own_sqlite_file(tmp_path):
    urls = {
        s: load_settings(s, env={"LABINOV_DATA_DIR": str(tmp_path)}).database_url
        for s in ("registration", "evaluation")
    }
    assert urls["registration"] != urls["evaluation"]


def test_a_configured_broker_is_not_the_embedded_one(tmp_path):
    settings = load_settings("evaluation", env={"LABINOV_DATA_DIR": str(tmp_path), "LABINOV_BROKER_URL": "memory://"})
    assert settings.broker_url == "memory://"
    assert settings.broker_is_embedded is False


def test_postgresql_urls_are_given_the_psycopg_driver():
    env = {"LABINOV_REGISTRATION_DATABASE_URL": "postgresql://labinov:secret@db:5432/registration"}
    settings = load_settings("registration", env=env)
    assert settings.database_url == "postgresql+psycopg://labinov:secret@db:5432/registration"


def test_service_ports_default_to_the_gateway_port_plus_one_two_three():
    settings = load_settings("registration", env={"LABINOV_PORT": "9000"})
    assert settings.port == 9000
    assert settings.service_ports == {"registration": 9001, "notification": 9002, "evaluation": 9003}


def test_a_service_port_can_be_set_on_its_own():
    settings = load_settings("registration", env={"LABINOV_PORT": "9000", "LABINOV_NOTIFICATION_PORT": "7777"})
    assert settings.service_ports["notification"] == 7777


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LABINOV_BROKER_URL", "kafka://broker:9092"),
        ("LABINOV_BROKER_URL", "localhost:5672"),
        ("LABINOV_REGISTRATION_DATABASE_URL", "mysql://db/registration"),
        ("LABINOV_SMTP_URL", "http://mail.example"),
        ("LABINOV_PORT", "eighty"),
        ("LABINOV_PORT", "0"),
        ("LABINOV_PORT", "70000"),
        ("LABINOV_JWT_PRIVATE_KEY", "my-secret-signing-key"),
    ],
)
def test_an_invalid_value_stops_start_up_with_an_error_naming_the_variable(variable, value):
    with pytest.raises(ConfigurationError, match=variable):
        load_settings("registration", env={variable: value})


def test_an_unknown_service_is_refused():
    with pytest.raises(ConfigurationError, match="billing"):
        load_settings("billing", env={})


# The service ports are LABINOV_PORT+1..+3: they must fit too, or start-up names the variable.
def test_the_highest_gateway_port_does_not_yield_service_ports_beyond_65535():
    try:
        settings = load_settings("registration", env={"LABINOV_PORT": "65535"})
    except ConfigurationError as exc:
        assert "LABINOV_" in str(exc)
    else:
        assert all(port <= 65535 for port in settings.service_ports.values()), settings.service_ports


# A corrupt key stops start-up with an error naming the variable, not later in cryptography.
@pytest.mark.parametrize(
    ("variable", "kind"), [("LABINOV_JWT_PRIVATE_KEY", "PRIVATE KEY"), ("LABINOV_JWT_PUBLIC_KEY", "PUBLIC KEY")]
)
def test_a_pem_shaped_value_that_is_not_a_key_is_refused_naming_the_variable(variable, kind):
    corrupt = f"-----BEGIN {kind}-----\nnot really a key\n-----END {kind}-----\n"
    with pytest.raises(ConfigurationError, match=variable):
        load_settings("registration", env={variable: corrupt})


def test_an_unknown_log_level_stops_start_up_naming_the_variable():
    with pytest.raises(ConfigurationError, match="LABINOV_LOG_LEVEL"):
        load_settings("registration", {"LABINOV_LOG_LEVEL": "verbose"})
    assert load_settings("registration", {"LABINOV_LOG_LEVEL": "debug"}).log_level == "DEBUG"


def test_an_error_about_a_url_never_shows_its_password():
    with pytest.raises(ConfigurationError) as refused:
        load_settings("registration", {"LABINOV_BROKER_URL": "ftp://guest:s3cret@broker:21/"})
    assert "LABINOV_BROKER_URL" in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_every_labinov_command_reports_a_bad_setting_as_one_line_naming_the_variable():
    from click.testing import CliRunner

    from services.cli import main

    result = CliRunner().invoke(main, ["migrate", "registration"], env={"LABINOV_PORT": "abc"})

    assert result.exit_code == 1
    assert "LABINOV_PORT" in result.output
    assert "Traceback" not in result.output


def test_the_programme_time_zone_defaults_to_wita_and_can_be_set():
    assert load_settings("registration", env={}).timezone.key == "Asia/Makassar"
    assert load_settings("registration", env={"LABINOV_TIMEZONE": "Asia/Jakarta"}).timezone.key == "Asia/Jakarta"


@pytest.mark.parametrize("value", ["Kalimantan/Utara", "../../etc/passwd", "WITA+8"])
def test_an_unknown_time_zone_stops_start_up_naming_the_variable(value):
    with pytest.raises(ConfigurationError, match="LABINOV_TIMEZONE"):
        load_settings("registration", env={"LABINOV_TIMEZONE": value})


def test_one_gateway_is_trusted_by_default_and_none_can_be_set():
    assert load_settings("registration", env={}).trusted_proxy_hops == 1
    assert load_settings("registration", env={"LABINOV_TRUSTED_PROXY_HOPS": "0"}).trusted_proxy_hops == 0


@pytest.mark.parametrize("value", ["-1", "6", "one"])
def test_an_unusable_number_of_trusted_gateways_stops_start_up_naming_the_variable(value):
    with pytest.raises(ConfigurationError, match="LABINOV_TRUSTED_PROXY_HOPS"):
        load_settings("registration", env={"LABINOV_TRUSTED_PROXY_HOPS": value})


def test_handler_attempts_are_read_under_their_new_name_and_still_under_the_old_one():
    assert load_settings("notification", env={"LABINOV_MAX_HANDLER_ATTEMPTS": "7"}).max_handler_attempts == 7
    assert load_settings("notification", env={"LABINOV_MAX_DELIVERY_ATTEMPTS": "3"}).max_handler_attempts == 3
    both = {"LABINOV_MAX_HANDLER_ATTEMPTS": "8", "LABINOV_MAX_DELIVERY_ATTEMPTS": "3"}
    assert load_settings("notification", env=both).max_handler_attempts == 8
    with pytest.raises(ConfigurationError, match="LABINOV_MAX_DELIVERY_ATTEMPTS"):
        load_settings("notification", env={"LABINOV_MAX_DELIVERY_ATTEMPTS": "many"})
