"""Settings for Codex Pooler. Every knob is an environment variable with a safe default."""

import os
from datetime import timedelta
from pathlib import Path

import environ
from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # optional; silently absent

# Development-friendly by default; production sets DEBUG=false and a real SECRET_KEY.
DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env("SECRET_KEY", default="dev-insecure-change-me" if DEBUG else environ.Env.NOTSET)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Port for `make run` and the demo.
PORT = env.int("PORT", default=4000)

INSTALLED_APPS = [
    "daphne",
    "accounts.apps.PoolerAdminConfig",  # django.contrib.admin, with two-factor sign-in
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "axes",
    "accounts",
    "proxy",
    "mcp_endpoint",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: it answers a locked-out sign-in
]

# The runtime routes (Pool API keys, MCP tokens, probes) need none of the operator middleware above, and
# under ASGI each sync-only middleware step is a hop through one shared thread: they get this list instead.
RUNTIME_PATH_PREFIXES = ("/backend-api/", "/v1/", "/healthz", "/readyz", "/metrics")
RUNTIME_MIDDLEWARE: list[str] = []

ROOT_URLCONF = "pooler.urls"
ASGI_APPLICATION = "pooler.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# An embedded SQLite file unless DATABASE_URL names a server (PostgreSQL in production).
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'pooler.sqlite3'}")}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Tests run Daphne in a subprocess, so the test database must be a file both can open.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-pooler.sqlite3")}
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
else:
    # The async paths run their database steps on a small shared thread pool (proxy/db.py); each of its
    # threads keeps one connection open, so a process holds a few connections however many streams it relays.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=600)
    # Off by default: a check is a `SELECT 1` before every database step of a turn. A step whose kept
    # connection died with the server runs once more on a new one instead (proxy/dbthread.py).
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DATABASE_CONN_HEALTH_CHECKS", default=False)
    # Seconds to wait for a new connection: an unreachable server is answered 503 soon, not after TCP's timeout.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", default=3)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# django-axes first: it refuses a sign-in while its user and address are locked out.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
# Every admin user must sign in with a code from an authenticator app (enrolled at /admin/2fa/); off, only those
# who enrolled one must.
POOLER_REQUIRE_2FA = env.bool("POOLER_REQUIRE_2FA", default=not DEBUG)
OTP_TOTP_ISSUER = "Codex Pooler"
# Failed sign-ins (a wrong password or code) allowed per user and address before they wait.
AXES_FAILURE_LIMIT = env.int("POOLER_SIGNIN_FAILURES", default=5)
# How long that wait is (minutes): a lockout always ends by itself; `manage.py unlock_operator` ends it now.
AXES_COOLOFF_TIME = timedelta(minutes=env.int("POOLER_SIGNIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "accounts.networks.request_address"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/pooler_locked_out.html"
# No request log of successful sign-ins in axes' own tables (the audit log has what operators need).
AXES_DISABLE_ACCESS_LOG = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env("STATIC_ROOT", default=str(BASE_DIR / ".cache" / "static"))

# Production hardening follows DEBUG: `manage.py check --deploy` is clean with DEBUG=false.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS = env.list("SILENCED_SYSTEM_CHECKS", default=["security.W008"])


def _encryption_keys() -> list[str]:
    """Fernet keys: the first encrypts, all decrypt. In DEBUG a key file is generated once."""
    keys = env.list("POOLER_ENCRYPTION_KEYS", default=[])
    if keys:
        return keys
    if not DEBUG:
        raise environ.ImproperlyConfigured("POOLER_ENCRYPTION_KEYS must be set when DEBUG is off")
    key_file = Path(env("POOLER_DEV_KEY_FILE", default=str(BASE_DIR / ".dev-encryption-key")))
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(Fernet.generate_key().decode())
    return [key_file.read_text().strip()]


POOLER_ENCRYPTION_KEYS = _encryption_keys()
# Where accounts' turns go unless an account overrides it (the simulator in tests).
POOLER_UPSTREAM_BASE_URL = env("POOLER_UPSTREAM_BASE_URL", default="https://chatgpt.com/backend-api/codex")
# ChatGPT's OAuth issuer: token refresh and login.
POOLER_AUTH_BASE_URL = env("POOLER_AUTH_BASE_URL", default="https://auth.openai.com")
# The Codex CLI's public OAuth client id.
POOLER_OAUTH_CLIENT_ID = env("POOLER_OAUTH_CLIENT_ID", default="app_EMoamEEZ73f0CkXaXp7hrann")
# Largest accepted request body, after decompression.
POOLER_MAX_BODY_BYTES = env.int("POOLER_MAX_BODY_BYTES", default=16 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = POOLER_MAX_BODY_BYTES
# Upstream attempts per turn (first try plus failovers) before the client gets an error.
POOLER_MAX_ATTEMPTS = env.int("POOLER_MAX_ATTEMPTS", default=3)
# Upstream timeouts in seconds: connect, and the wait for the first byte / between chunks.
POOLER_CONNECT_TIMEOUT = env.float("POOLER_CONNECT_TIMEOUT", default=10.0)
POOLER_READ_TIMEOUT = env.float("POOLER_READ_TIMEOUT", default=300.0)
# Upstream connection pools (a session's requests always use the same one), each keeping up to
# POOLER_UPSTREAM_KEEPALIVE_CONNECTIONS idle connections for reuse. httpcore 1.0.9 closes every idle connection
# of a pool while it holds more than that many in all (encode/httpcore#1000), so a pool with more concurrent
# streams than its limit opens a new connection (a TLS handshake to the real backend) for most turns; and each
# request checks every connection of its pool, so several small pools cost less than one large one.
POOLER_UPSTREAM_POOLS = env.int("POOLER_UPSTREAM_POOLS", default=16)
POOLER_UPSTREAM_KEEPALIVE_CONNECTIONS = env.int("POOLER_UPSTREAM_KEEPALIVE_CONNECTIONS", default=32)
# Longest wait (seconds) of a turn for a slot while every account is at its concurrent-turn cap, before a 429
# (fair share between keys, README "Key policy"); 0: refused at once.
POOLER_FAIR_SHARE_WAIT = env.float("POOLER_FAIR_SHARE_WAIT", default=10.0)
# Longest wait for the first byte of a turn before trying another account.
POOLER_FIRST_BYTE_TIMEOUT = env.float("POOLER_FIRST_BYTE_TIMEOUT", default=120.0)
# A compaction turn whose account has used this much of a quota window moves first to an account with room
# (the compaction item it makes is readable only where it was made; see proxy/routing.py).
POOLER_COMPACT_ELSEWHERE_PERCENT = env.float("POOLER_COMPACT_ELSEWHERE_PERCENT", default=80.0)
# Retry-After (seconds) of the 503 answered while the database is unreachable.
POOLER_DATABASE_RETRY_AFTER = env.int("POOLER_DATABASE_RETRY_AFTER", default=2)
# Turns served while the database was unreachable wait in memory for their accounting rows, this many at most
# per process (past it a turn's row is dropped, counted in pooler_accounting_dropped_total and logged once).
POOLER_ACCOUNTING_BUFFER = env.int("POOLER_ACCOUNTING_BUFFER", default=10000)
# A plain turn's statements (its key, accounts and row) run on the event loop over psycopg's async connections
# rather than on the database threads (PostgreSQL only; proxy/loop_db.py).
POOLER_LOOP_DATABASE = env.bool("POOLER_LOOP_DATABASE", default=True)
# Refresh an access token when it expires within this many seconds.
POOLER_REFRESH_MARGIN_SECONDS = env.int("POOLER_REFRESH_MARGIN_SECONDS", default=300)
# How long a process reuses a pool's account ordering (chosen accounts are always re-read fresh).
POOLER_ROUTING_CACHE_SECONDS = env.float("POOLER_ROUTING_CACHE_SECONDS", default=2.0)
# How long a process reuses the model price table (accounts/pricing.py) before reading the admin's prices again.
POOLER_PRICES_CACHE_SECONDS = env.float("POOLER_PRICES_CACHE_SECONDS", default=60.0)
# How long the merged model list of a pool is cached, in seconds.
POOLER_MODELS_CACHE_SECONDS = env.int("POOLER_MODELS_CACHE_SECONDS", default=60)
# RequestLog rows older than this many days are pruned by the worker.
POOLER_LOG_RETENTION_DAYS = env.int("POOLER_LOG_RETENTION_DAYS", default=30)
# Worker: seconds between quota polls of one account.
POOLER_QUOTA_POLL_SECONDS = env.int("POOLER_QUOTA_POLL_SECONDS", default=300)
# /metrics access: a bearer token and/or client networks (CIDR). Both empty = loopback only.
POOLER_METRICS_TOKEN = env("POOLER_METRICS_TOKEN", default="")
POOLER_METRICS_ALLOWED_NETWORKS = env.list("POOLER_METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
# Proxies (CIDRs) whose X-Forwarded-For is believed when reading a client's address; empty: the peer is the client.
POOLER_TRUSTED_PROXIES = env.list("POOLER_TRUSTED_PROXIES", default=[])
# How long an operator's invite link (invite_operator, the admin's Operator invites) can be used.
POOLER_INVITE_HOURS = env.int("POOLER_INVITE_HOURS", default=72)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "pooler.logs.RequestLineFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "json": {"class": "logging.StreamHandler", "formatter": "json"},
    },
    "loggers": {
        "pooler": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO"), "propagate": False},
        # One JSON line per request; never secrets or prompt text (only the fields accounting passes).
        "pooler.requests": {"handlers": ["json"], "level": env("LOG_LEVEL", default="INFO"), "propagate": False},
        # A line per upstream request would drown the request lines (and cost time on the stream path).
        "httpx": {"level": "WARNING"},
    },
}
