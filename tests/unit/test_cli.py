"""The ``labinov`` command as a new user meets it: its help, where it writes, and how it refuses."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from services.cli import main, refusal_sentences, sentence
from shared.errors import RuleViolation

#: Every command a person can type, as ``labinov --help`` should list them.
COMMANDS = ("gateway", "migrate", "run", "user create", "web", "worker")
ORGANISER = ["user", "create", "--role", "organiser", "--email", "panitia@kaltaraprov.go.id"]
GOOD_PASSWORD = ["--password", "rahasia-panitia-2017"]


def labinov(*arguments: str, env: dict[str, str]):
    return CliRunner().invoke(main, list(arguments), env=env)


def commands_section(help_text: str) -> list[str]:
    return [line for line in help_text.split("Commands:", 1)[1].splitlines() if line.strip()]


def test_help_lists_every_command_one_per_line_with_what_it_does():
    result = labinov("--help", env={})

    assert result.exit_code == 0
    lines = commands_section(result.output)
    assert len(lines) == len(COMMANDS), lines
    for line, command in zip(lines, COMMANDS, strict=True):
        assert re.match(rf"^  {command}\b.*\s{{2,}}[A-Z].*\.$", line), f"not one line with a description: {line!r}"
        assert len(line) <= 80


def test_help_says_which_data_folder_the_commands_work_on():
    assert "LABINOV_DATA_DIR" in labinov("--help", env={}).output


def test_user_create_in_a_folder_without_a_suite_is_refused_and_creates_nothing(tmp_path):
    data_dir = tmp_path / "elsewhere" / "var"

    result = labinov(*ORGANISER, *GOOD_PASSWORD, env={"LABINOV_DATA_DIR": str(data_dir)})

    assert result.exit_code == 1
    assert f"No Labinov suite is in the data folder {data_dir}" in result.output
    assert "--create" in result.output and "LABINOV_DATA_DIR" in result.output
    assert not data_dir.exists(), "the refused command made the folder anyway"


def test_user_create_with_create_starts_a_suite_and_says_where_it_wrote(tmp_path):
    data_dir = tmp_path / "var"

    result = labinov(*ORGANISER, *GOOD_PASSWORD, "--create", env={"LABINOV_DATA_DIR": str(data_dir)})

    assert result.exit_code == 0, result.output
    assert f"Data folder: {data_dir}" in result.output
    assert f"Registration database: sqlite:///{data_dir / 'registration.sqlite3'}" in result.output
    assert re.search(r"^Created organiser panitia@kaltaraprov\.go\.id \(.+\)\.$", result.output, re.MULTILINE)
    assert (data_dir / "registration.sqlite3").is_file()


def test_user_create_in_a_migrated_suite_needs_no_flag(tmp_path):
    env = {"LABINOV_DATA_DIR": str(tmp_path / "var")}
    migrated = labinov("migrate", "registration", env=env)
    assert migrated.exit_code == 0, migrated.output
    assert "registration: database sqlite:///" in migrated.output and "is up to date" in migrated.output

    result = labinov(*ORGANISER, *GOOD_PASSWORD, env=env)

    assert result.exit_code == 0, result.output
    assert "Created organiser" in result.output


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["--password", "pendek"], "Cannot create the account: password too short (--password: at least"),
        (["--password", "rahasia-panitia-2017", "--email", "panitia"], "Cannot create the account: "),
    ],
)
def test_a_refused_account_is_told_in_sentences_not_python_values(tmp_path, arguments, expected):
    env = {"LABINOV_DATA_DIR": str(tmp_path / "var")}
    labinov("migrate", "registration", env=env)

    result = labinov(
        "user", "create", "--role", "evaluator", "--email", "penilai@kaltaraprov.go.id", *arguments, env=env
    )

    assert result.exit_code == 1
    error = result.output.splitlines()[-1]
    assert error.startswith(f"Error: {expected}"), error
    assert error.endswith(".") and not re.search(r"[{}\[\]]", error), error


def test_the_same_address_twice_is_refused_in_one_sentence(tmp_path):
    env = {"LABINOV_DATA_DIR": str(tmp_path / "var")}
    assert labinov(*ORGANISER, *GOOD_PASSWORD, "--create", env=env).exit_code == 0

    result = labinov(*ORGANISER, *GOOD_PASSWORD, env=env)

    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "Error: Cannot create the account: an account for panitia@kaltaraprov.go.id already exists."
    )


def test_an_unreachable_database_is_a_sentence_naming_the_settings_not_a_traceback(tmp_path):
    env = {
        "LABINOV_DATA_DIR": str(tmp_path / "var"),
        "LABINOV_REGISTRATION_DATABASE_URL": "postgresql://labinov:s3cret@127.0.0.1:1/registration",
    }

    result = labinov(*ORGANISER, *GOOD_PASSWORD, env=env)

    assert result.exit_code == 1
    assert "Traceback" not in result.output and "s3cret" not in result.output
    assert "LABINOV_*_DATABASE_URL" in result.output.splitlines()[-1]


@pytest.mark.postgres
def test_a_postgres_database_never_migrated_holds_no_suite_until_migrated(tmp_path, postgres_url):
    env = {"LABINOV_DATA_DIR": str(tmp_path / "var"), "LABINOV_REGISTRATION_DATABASE_URL": postgres_url}

    refused = labinov(*ORGANISER, *GOOD_PASSWORD, env=env)
    assert refused.exit_code == 1
    assert "holds no Labinov suite: it was never migrated" in refused.output
    assert "LABINOV_REGISTRATION_DATABASE_URL" in refused.output

    assert labinov("migrate", "registration", env=env).exit_code == 0
    assert labinov(*ORGANISER, *GOOD_PASSWORD, env=env).exit_code == 0


def test_a_bad_setting_is_one_sentence_naming_the_variable():
    result = labinov("migrate", "registration", env={"LABINOV_PORT": "abc"})

    assert result.exit_code == 1
    assert result.output.strip() == "Error: The settings cannot be used: LABINOV_PORT='abc' is not a whole number."


def test_refusals_become_sentences_that_name_the_option_to_change():
    error = RuleViolation("password too short", {"password": ["At least 10 characters."], "name": ["Too long."]})

    assert refusal_sentences("Cannot create the account", error, ("password",)) == (
        "Cannot create the account: password too short (--password: at least 10 characters; name: too long)."
    )
    assert sentence("the session is full") == "The session is full."
