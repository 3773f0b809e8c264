"""Start-up: bad settings stop it with the variable's name; production settings pass check --deploy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

PRODUCTION = {
    "VERCEL_ENV": "production",
    "SECRET_KEY": "k" * 20 + "-production-secret-key-with-enough-entropy-0123456789",
    "ALLOWED_HOSTS": "noshow.example.com",
    "CRON_SECRET": "c" * 40,
    "INTERNAL_SECRET": "i" * 40,
    "DATABASE_URL": "postgres://app:pw@db.example.com:6543/app",
}


LOCAL = {"DEBUG": "true"}  # development mode, as `make demo` and the test suite run


def check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """manage.py check (or another command, given first) with these variables set, and DEBUG only if given."""
    clean = {key: value for key, value in os.environ.items() if key not in PRODUCTION and key != "DEBUG"}
    command = list(args) if args and not args[0].startswith("-") else ["check", *args]
    return subprocess.run(
        [sys.executable, "manage.py", *command],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_settings_pass_check_deploy_without_warnings():
    result = check(PRODUCTION, "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_warns_about_missing_job_secrets():
    result = check({**PRODUCTION, "CRON_SECRET": "", "INTERNAL_SECRET": "short"}, "--deploy")
    assert "jobs.W001" in result.stderr and "CRON_SECRET is not set" in result.stderr
    assert "jobs.W002" in result.stderr and "INTERNAL_SECRET is shorter than 32" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "maybe"),
        ("DATABASE_URL", "mysql://root@localhost/app"),
        ("DATABASE_URL", "not a url"),
        ("RECOMPUTE_SCORES_WINDOW_DAYS", "0"),
        ("RECOMPUTE_SCORES_WINDOW_DAYS", "half a year"),
        ("RESOLVE_OUTCOMES_GRACE_MINUTES", "-1"),
        ("OFFER_TTL_MINUTES", "15m"),
        ("JOB_RUNS_RETENTION_DAYS", "0"),
        ("JOBS_TIME_BUDGET_SECONDS", "1.5"),
        ("RECOMPUTE_SCORES_LOCK_ID", "482175x"),
        ("RESOLVE_OUTCOMES_LOCK_ID", str(2**63)),
        ("ALLOWED_HOSTS", " , "),
        ("DATABASE_URL", "sqlite://"),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/"),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/app?conn_max_age=forever"),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/app?conn_max_age=-1"),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/app?conn_health_checks=maybe"),
        ("RECOMPUTE_SCORES_WINDOW_DAYS", "1_000"),
        ("RECOMPUTE_SCORES_WINDOW_DAYS", "+30"),
        ("RECOMPUTE_SCORES_WINDOW_DAYS", " 30"),
        ("RECOMPUTE_SCORES_WINDOW_DAYS", "30 "),
        ("RECOMPUTE_SCORES_WINDOW_DAYS", "\u0663\u0660"),  # Arabic-Indic digits
        ("RECOMPUTE_SCORES_LOCK_ID", "+482175"),
        ("JOBS_LEASE_SECONDS", "900"),  # a killed run would block its job for 15 minutes
        ("JOBS_ALERT_SEND_SECONDS", "600"),  # a killed sender's alert would wait 30 minutes for its lease
    ],
)
def test_a_malformed_variable_stops_start_up_naming_it_and_not_its_value(name, value):
    result = check({**LOCAL, name: value})
    assert result.returncode != 0
    assert f"ImproperlyConfigured: {name} must be" in result.stderr
    if len(value) > 3 and value != "sqlite://":  # that one is the start of the message's own example
        assert value not in result.stderr.split("ImproperlyConfigured:")[-1]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", "60 True"),  # the embedded SQLite default
        ("postgres://app@db.example.com/app", "60 True"),
        ("postgres://app@db.example.com/app?conn_max_age=0&conn_health_checks=false", "0 False"),
        ("sqlite:///db.sqlite3?conn_max_age=600", "600 True"),
    ],
)
def test_connections_stay_open_a_minute_and_are_checked_before_reuse_unless_the_url_says(url, expected):
    shell = ["shell", "-c", "from django.db import connection as c; print(c.settings_dict['CONN_MAX_AGE'],"
             " c.settings_dict['CONN_HEALTH_CHECKS'])"]  # fmt: skip
    result = check({**LOCAL, "DATABASE_URL": url}, *shell)
    assert result.stdout.split()[-2:] == expected.split(), result.stderr


def test_a_negative_lock_id_is_a_valid_bigint():
    shell = ["shell", "-c", "from django.conf import settings; print(settings.JOBS_LOCK_IDS)"]
    result = check({**LOCAL, "RECOMPUTE_SCORES_LOCK_ID": "-5"}, *shell)
    assert result.stdout.strip().endswith("{'RECOMPUTE_SCORES_LOCK_ID': -5}"), result.stderr


@pytest.mark.parametrize("debug", [{"DEBUG": "false"}, {}])
def test_without_debug_a_secret_key_is_required(debug):
    result = check(debug)
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def show(*names: str) -> list[str]:
    return ["shell", "-c", f"from django.conf import settings; print({', '.join(f'settings.{n}' for n in names)})"]


def test_debug_is_off_unless_set_to_true_wherever_the_app_runs():
    # Outside Vercel (no VERCEL_ENV), where DEBUG used to default to on.
    deployed = {key: value for key, value in PRODUCTION.items() if key != "VERCEL_ENV"}
    result = check(deployed, *show("DEBUG", "PRODUCTION", "SECURE_SSL_REDIRECT"))
    assert result.stdout.split()[-3:] == ["False", "True", "True"], result.stderr
    assert check({**deployed, **LOCAL}, *show("DEBUG")).stdout.split()[-1] == "True"


@pytest.mark.parametrize(
    ("url", "folder"),
    [
        ("filemail:///tmp/mail", "/tmp/mail"),  # django-environ alone: tmp/mail, in the working directory
        ("filemail:///var/spool/no%20show", "/var/spool/no show"),
        ("filemail:mail/out", str(ROOT / "mail/out")),  # relative: to the project folder, wherever it is started
    ],
)
def test_a_filemail_url_names_the_folder_as_written(url, folder):
    result = check({**LOCAL, "EMAIL_URL": url}, *show("EMAIL_BACKEND", "EMAIL_FILE_PATH"))
    assert result.stdout.strip().splitlines()[-1] == f"django.core.mail.backends.filebased.EmailBackend {folder}"


@pytest.mark.parametrize("url", ["filemail://tmp/mail", "filemail://", "filemail:///"])
def test_a_filemail_url_with_a_host_or_without_a_folder_stops_start_up(url):
    result = check({**LOCAL, "EMAIL_URL": url})
    assert result.returncode != 0 and "ImproperlyConfigured: EMAIL_URL must be" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "sqlite://admin:db-pass-0451@/db.sqlite3"),  # django-environ warned with the password
        ("DATABASE_URL", "//admin:db-pass-0451@db.example.com/app"),  # and printed a URL it could not read
        ("EMAIL_URL", "smtp+bad://mailer:db-pass-0451@smtp.example.com:587"),
        ("JOBS_ALERT_WEBHOOK_URL", "ftp://hooks.example.com/db-pass-0451"),
    ],
)
def test_a_refused_url_shows_none_of_its_secrets_anywhere(name, value):
    result = check({**LOCAL, name: value})
    assert result.returncode != 0 and f"ImproperlyConfigured: {name} must be" in result.stderr
    assert "db-pass-0451" not in result.stdout + result.stderr


def test_a_malformed_dotenv_line_stops_start_up_by_its_number_not_its_text(tmp_path):
    from django.core.exceptions import ImproperlyConfigured

    from project.settings import _read_dotenv

    dotenv = tmp_path / ".env"
    dotenv.write_text("# local\nDEBUG=true\n\nDATABASE_URL = postgres://app:db-pass-0451@db.example.com/app\n")
    with pytest.raises(ImproperlyConfigured) as refused:
        _read_dotenv(dotenv)
    assert str(refused.value) == ".env line 4 must be NAME=value (no spaces around =) or # ..."


def test_a_secret_starting_with_a_dollar_is_taken_as_it_is():
    shell = ["shell", "-c", "from django.conf import settings; print(settings.CRON_SECRET, settings.SECRET_KEY)"]
    result = check({**LOCAL, "CRON_SECRET": "$ecret-value", "SECRET_KEY": "$HOME-not-a-reference"}, *shell)
    assert result.stdout.split()[-2:] == ["$ecret-value", "$HOME-not-a-reference"], result.stderr
