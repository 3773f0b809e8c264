"""Settings, read from the environment in this one place (see env.example).

A malformed value stops start-up with ImproperlyConfigured naming the variable.
Values are never echoed back: some of them are secrets.
"""

from __future__ import annotations

import io
import os
import re
import urllib.parse
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _read_dotenv(path: Path) -> None:
    """Read an optional .env (for local development) into the environment, which wins.

    A line that is neither NAME=value nor a comment stops start-up, by its number only:
    django-environ would log the whole line, password and all, and go on without it.
    """
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        if line and not line.startswith("#") and not re.fullmatch(r"(?:export )?[A-Za-z_0-9]+=.*", line):
            raise ImproperlyConfigured(f"{path.name} line {number} must be NAME=value (no spaces around =) or # ...")
    environ.Env.read_env(io.StringIO(text))


_read_dotenv(BASE_DIR / ".env")

T = TypeVar("T")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _text(name: str) -> str:
    """A variable as it is (django-environ would read a leading "$" as a reference to another variable)."""
    return os.environ.get(name, "")


def _read(name: str, parse: Callable[[str], T], default: T, expected: str) -> T:
    """Parse one variable as it is (no spaces around it); unset or empty means the default."""
    raw = _text(name)
    if not raw:
        return default
    if raw != raw.strip():
        raise ImproperlyConfigured(f"{name} must be {expected}, without spaces.")
    try:
        return parse(raw)
    except (ValueError, KeyError, TypeError, ImproperlyConfigured):
        raise ImproperlyConfigured(f"{name} must be {expected}.") from None


def _bool(raw: str) -> bool:
    if raw.lower() in _TRUE | _FALSE:
        return raw.lower() in _TRUE
    raise ValueError(raw)


def _int(low: int, high: int = 2**63 - 1) -> Callable[[str], int]:
    """Digits only (a minus where the range allows it): never "+5", "1_000", " 5" or non-ASCII digits."""

    def parse(raw: str) -> int:
        if not re.fullmatch(r"-?[0-9]+" if low < 0 else r"[0-9]+", raw, flags=re.ASCII):
            raise ValueError(raw)
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(raw)
        return value

    return parse


def _hosts(raw: str) -> list[str]:
    hosts = [host.strip() for host in raw.split(",") if host.strip()]
    if not hosts:
        raise ValueError(raw)
    return hosts


def _emails(raw: str) -> list[str]:
    addresses = [address.strip() for address in raw.split(",") if address.strip()]
    if not addresses or not all(re.fullmatch(r"[^@\s,]+@[^@\s,]+", address) for address in addresses):
        raise ValueError(raw)
    return addresses


def _url(raw: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", raw):
        raise ValueError(raw)
    return raw.rstrip("/")


def _quietly(parse: Callable[[str], dict[str, Any]], raw: str) -> dict[str, Any]:
    """django-environ's parser without its warnings: they quote the URL, password included."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return parse(raw)


def _email(raw: str) -> dict[str, Any]:
    """django-environ's e-mail URL, except that filemail's folder is the path as written.

    django-environ drops the path's first slash (filemail:///tmp/mail would be ./tmp/mail). Here
    filemail:///tmp/mail is /tmp/mail, filemail:mail/out is mail/out in the project folder, and a host
    (filemail://tmp/mail) is refused: it is what a lost slash looks like.
    """
    config = _quietly(environ.Env.email_url_config, raw)
    if config["EMAIL_BACKEND"] == "django.core.mail.backends.filebased.EmailBackend":
        parts = urllib.parse.urlsplit(raw)
        if parts.netloc or not parts.path.strip("/"):
            raise ValueError("a folder, and no host")
        config["EMAIL_FILE_PATH"] = str(BASE_DIR / urllib.parse.unquote(parts.path))  # an absolute path stays so
    return config


def _database(raw: str) -> dict[str, Any]:
    if raw.startswith("sqlite:") and urllib.parse.urlsplit(raw).netloc:  # sqlite://file or sqlite://user@/...
        raise ValueError("an SQLite URL has no host")
    config = _quietly(environ.Env.db_url_config, raw)
    if config.get("ENGINE") not in (
        "django.db.backends.sqlite3",
        "django.db.backends.postgresql",
    ):
        raise ValueError("unsupported engine")
    if not config.get("NAME") or config["NAME"] == ":memory:":  # sqlite:// or postgres://host/ names no database
        raise ValueError("no database named")
    if "CONN_MAX_AGE" in config:  # seconds; django-environ leaves anything but digits a string
        config["CONN_MAX_AGE"] = _int(0)(str(config["CONN_MAX_AGE"]))
    if "CONN_HEALTH_CHECKS" in config:  # django-environ leaves it a string: "false" would be true
        config["CONN_HEALTH_CHECKS"] = _bool(str(config["CONN_HEALTH_CHECKS"]))
    return config


# Vercel sets VERCEL_ENV (production | preview | development) on its deployments.
VERCEL_ENV = _text("VERCEL_ENV")

# Off unless asked for, wherever the app runs: debug pages show settings and the environment.
# `make demo` and the test suite (pytest-env, pyproject.toml) set DEBUG=true themselves.
DEBUG = _read("DEBUG", _bool, False, "true or false")
# As the reference's NODE_ENV check: in production, /api/jobs ignores ?lockId=.
PRODUCTION = VERCEL_ENV == "production" or not DEBUG

SECRET_KEY = _text("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "django-insecure-local-development-only"

ALLOWED_HOSTS = _read(
    "ALLOWED_HOSTS",
    _hosts,
    ["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG else [],
    "a comma-separated list of host names",
)
# Vercel's own host names for this deployment, so cron requests are accepted.
for _name in ("VERCEL_URL", "VERCEL_BRANCH_URL", "VERCEL_PROJECT_PRODUCTION_URL"):
    if _host := _text(_name):
        ALLOWED_HOSTS.append(_host)

DATABASES: dict[str, dict[str, Any]] = {
    "default": _read(
        "DATABASE_URL",
        _database,
        {"ENGINE": "django.db.backends.sqlite3", "NAME": str(BASE_DIR / "db.sqlite3")},
        "a database URL: sqlite:///path/to/file.sqlite3 or postgres://user:pass@host:port/name"
        " (and ?conn_max_age=SECONDS, ?conn_health_checks=true|false)",
    )
}
# Safe behind a transaction-mode pooler (PgBouncer, Supabase 6543, Neon -pooler): a server-side
# cursor would outlive the pooler's transaction. Django already prepares no statements (psycopg 3).
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
# Connections stay open between requests, 60 s unless the URL says (`?conn_max_age=0`: one per request), and are
# checked before each reuse (`?conn_health_checks=false`: not): opening one costs more than a skipped run's whole
# work. Safe here: every lock a job takes lives in one transaction, so a reused connection carries none over.
DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # Writers queue instead of failing at once; WAL lets readers run beside them.
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        # recursive_triggers: an INSERT OR REPLACE fires the delete triggers of the row it replaces, so the
        # scores' triggers see it (scoring/migrations).
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536;"
        " PRAGMA recursive_triggers=ON;",
    }
    # A file, not memory, so that tests can share it with real subprocesses.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / ".test.sqlite3")}

# Jobs are declared in each app's jobs.py (scoring/jobs.py); these are the framework's and the jobs' knobs.
CRON_SECRET = _text("CRON_SECRET")
INTERNAL_SECRET = _text("INTERNAL_SECRET")
RECOMPUTE_SCORES_WINDOW_DAYS = _read(
    "RECOMPUTE_SCORES_WINDOW_DAYS", _int(1, 3650), 180, "a whole number of days from 1 to 3650"
)
RECOMPUTE_SCORES_BATCH_SIZE = _read(
    "RECOMPUTE_SCORES_BATCH_SIZE", _int(1, 1_000_000), 20000, "a whole number of customers from 1 to 1000000"
)
RESOLVE_OUTCOMES_GRACE_MINUTES = _read(
    "RESOLVE_OUTCOMES_GRACE_MINUTES", _int(0, 10080), 60, "a whole number of minutes from 0 to 10080"
)
RESOLVE_OUTCOMES_BATCH_SIZE = _read(
    "RESOLVE_OUTCOMES_BATCH_SIZE", _int(1, 100_000), 10000, "a whole number of appointments from 1 to 100000"
)
OFFER_TTL_MINUTES = _read("OFFER_TTL_MINUTES", _int(1, 10080), 15, "a whole number of minutes from 1 to 10080")
JOB_RUNS_RETENTION_DAYS = _read("JOB_RUNS_RETENTION_DAYS", _int(1, 36500), 90, "a whole number of days >= 1")
JOBS_TIME_BUDGET_SECONDS = _read(
    "JOBS_TIME_BUDGET_SECONDS", _int(1, 86400), 240, "a whole number of seconds from 1 to 86400"
)
# SQLite's lease, renewed while a run works: a killed run blocks its job for this long at most.
JOBS_LEASE_SECONDS = _read("JOBS_LEASE_SECONDS", _int(10, 120), 60, "a whole number of seconds from 10 to 120")

# <JOB_NAME>_LOCK_ID, <JOB_NAME>_CRON_GRACE_MINUTES and <JOB_NAME>_MAX_LAG_MINUTES override a job's declared
# lock id, grace (how late a scheduled run may start before the job counts as late) and lag, whatever the job.
JOBS_LOCK_IDS = {
    name: _read(name, _int(-(2**63)), 0, "an integer in PostgreSQL's bigint range")
    for name in sorted(os.environ)
    if name.endswith("_LOCK_ID") and _text(name)
}
JOBS_CRON_GRACE_MINUTES = {
    name: _read(name, _int(0, 10080), 0, "a whole number of minutes from 0 to 10080")
    for name in sorted(os.environ)
    if name.endswith("_CRON_GRACE_MINUTES") and _text(name)
}
# <JOB_NAME>_MAX_LAG_MINUTES: how long the oldest item a job has due may wait before the job is `behind`.
JOBS_MAX_LAG_MINUTES = {
    name: _read(name, _int(1, 100800), 0, "a whole number of minutes from 1 to 100800")
    for name in sorted(os.environ)
    if name.endswith("_MAX_LAG_MINUTES") and _text(name)
}

# <JOB_NAME>_CHECKIN_URL: an outside monitor's check-in URL for a job (healthchecks.io, Sentry Crons, Cronitor): a
# start and an end signal for every real run, through the outbox (jobs/checkins.py).
JOBS_CHECKIN_URLS = {
    name: _read(name, _url, "", "an http(s) URL")
    for name in sorted(os.environ)
    if name.endswith("_CHECKIN_URL") and _text(name)
}

# Alerts: one message when a job turns failing or late, reminders while it stays so, one on recovery.
JOBS_ALERT_EMAILS: list[str] = _read("JOBS_ALERT_EMAILS", _emails, [], "a comma-separated list of e-mail addresses")
JOBS_ALERT_WEBHOOK_URL = _read("JOBS_ALERT_WEBHOOK_URL", _url, "", "an http(s) URL")
JOBS_ALERT_AFTER_FAILURES = _read("JOBS_ALERT_AFTER_FAILURES", _int(1, 100), 1, "a whole number from 1 to 100")
JOBS_ALERT_REPEAT_HOURS = _read("JOBS_ALERT_REPEAT_HOURS", _int(1, 720), 24, "a whole number of hours from 1 to 720")
# One attempt to deliver an alert ends within this, connect, send and read together. A sender that dies mid-attempt
# leaves the message to the next check after 3 x this (its lease).
JOBS_ALERT_SEND_SECONDS = _read("JOBS_ALERT_SEND_SECONDS", _int(1, 60), 10, "a whole number of seconds from 1 to 60")
# Where the admin is, for links in alerts (Vercel's production host when not set).
SITE_URL = _read(
    "SITE_URL",
    _url,
    f"https://{_text('VERCEL_PROJECT_PRODUCTION_URL')}" * bool(_text("VERCEL_PROJECT_PRODUCTION_URL")),
    "an http(s) URL",
)
# django-environ's e-mail URL: smtp+tls://user:pass@host:587, consolemail://, ... (default: print to the console).
_EMAIL = _read(
    "EMAIL_URL",
    _email,
    {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"},
    "an e-mail URL such as smtp+tls://user:password@host:587, consolemail:// or filemail:///absolute/folder",
)
EMAIL_BACKEND = _EMAIL["EMAIL_BACKEND"]
EMAIL_HOST = _EMAIL.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = _EMAIL.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _EMAIL.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _EMAIL.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = bool(_EMAIL.get("EMAIL_USE_TLS"))
EMAIL_USE_SSL = bool(_EMAIL.get("EMAIL_USE_SSL"))
EMAIL_FILE_PATH = _EMAIL.get("EMAIL_FILE_PATH") or None
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = _read("DEFAULT_FROM_EMAIL", _emails, ["jobs@localhost"], "an e-mail address")[0]

INSTALLED_APPS = [
    "project.apps.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "scoring",
    "jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = "project.formats"  # times read `2026-12-02 04:34 UTC` on every admin page

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# appt_customer_busy covers starts_at on PostgreSQL (INCLUDE); SQLite builds it without, and reads the row instead:
# said once here, not in a warning before every command (`make demo` printed it).
SILENCED_SYSTEM_CHECKS = ["models.W040"]

# Error pages and reports hide every setting and environment variable that can hold a credential.
DEFAULT_EXCEPTION_REPORTER_FILTER = "project.reporting.ExceptionReporterFilter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"jobs": {"handlers": ["console"], "level": "INFO"}},
}

if not DEBUG:
    # Vercel terminates TLS and forwards the scheme.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Vercel Cron does not follow redirects: the job endpoints must answer directly.
    SECURE_REDIRECT_EXEMPT = [r"^api/"]
    SECURE_HSTS_SECONDS = _read("SECURE_HSTS_SECONDS", _int(0), 31536000, "a whole number of seconds")
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
