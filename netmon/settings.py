"""Netmon settings: every value that varies between machines comes from the environment, here.

Defaults work on a laptop (SQLite under var/, Redis on localhost, DEBUG on). With
``NETMON_ENV=production`` the project refuses to start without a real SECRET_KEY and turns on
the secure cookie/HSTS settings that ``manage.py check --deploy`` asks for.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from capture.choices import IncidentSeverity  # Django-free vocabulary

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("NETMON_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use 1/0, true/false, yes/no or on/off")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_float(name: str, default: float, *, above: float | None = None) -> float:
    """A finite number; with ``above``, it must be greater than that."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")) or (above is not None and not value > above):
        allowed = f"a finite number greater than {above:g}" if above is not None else "a finite number"
        raise ImproperlyConfigured(f"{name}={raw!r}: use {allowed}")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


NETMON_ENV = env_str("NETMON_ENV", "development")
if NETMON_ENV not in {"development", "production", "test"}:
    raise ImproperlyConfigured(f"NETMON_ENV={NETMON_ENV!r}: use development, production or test")
PRODUCTION = NETMON_ENV == "production"
DEBUG = env_bool("DEBUG", not PRODUCTION)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION or not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment, e.g. "
            "export SECRET_KEY=\"$(python -c 'import secrets; print(secrets.token_urlsafe(50))')\""
        )
    # Development only: a per-checkout key kept under var/, never in the repository.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    _key_file = VAR_DIR / "dev-secret-key"
    if not _key_file.exists():
        import secrets

        _key_file.write_text(secrets.token_urlsafe(50))
        _key_file.chmod(0o600)
    SECRET_KEY = _key_file.read_text().strip()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]" + ("" if PRODUCTION else ",testserver"))
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "channels",
    "netmon",
    "capture",
    "detection",
    "exports",
    "alerts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "netmon.middleware.LocalOnlyMiddleware",
]

ROOT_URLCONF = "netmon.urls"
ASGI_APPLICATION = "netmon.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "netmon" / "templates"],
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

# --- database: SQLite under var/ by default, PostgreSQL in production via DATABASE_URL ---
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'netmon.sqlite3'}")
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL={DATABASE_URL!r} is not a database URL: {exc}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL lets the web process read while a worker writes; busy timeout instead of "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = (
        0 if "pytest" in sys.modules else DATABASES["default"]["CONN_MAX_AGE"]
    )
    # A file, not memory, so the worker/daphne processes started by integration tests share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-netmon-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, Celery, Channels ---
# Tests use their own Redis database so they never touch a running stack's streams.
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/" + ("15" if NETMON_ENV == "test" else "0"))
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A worker killed mid-task gets its message back: tasks are idempotent, so redelivery is safe.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Safety net (KiB; 0 turns it off): a pool process whose resident memory passed this when a task
# ended is replaced by a fresh one (checked between tasks, so no task is cut short; the next batch
# reloads the model). Ingest processes stay well under it (netmon/celery.py collects the garbage of
# retried tasks promptly); this only bounds what nothing else does, e.g. a process that trained a model.
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env_int("CELERY_WORKER_MAX_MEMORY_PER_CHILD", 1_000_000) or None
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 1800)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 1700)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Exports run on a queue of their own, served by a worker of their own (Procfile "exports", compose
# "exports-worker"): a pile of exports waits there, never in front of ingest on the default queue.
CELERY_TASK_DEFAULT_QUEUE = "celery"
EXPORT_QUEUE = "exports"
# Notifications too (Procfile "notify", compose "notify-worker"): a slow or unreachable destination
# holds a notify worker, never an ingest one.
NOTIFY_QUEUE = "notify"
CELERY_TASK_ROUTES = {"exports.*": {"queue": EXPORT_QUEUE}, "alerts.*": {"queue": NOTIFY_QUEUE}}
CELERY_BEAT_SCHEDULE: dict = {
    "sweep-streams": {"task": "detection.sweep_streams", "schedule": 5.0},
    "prune-retention": {"task": "capture.prune_retention", "schedule": 3600.0},
    "expire-exports": {"task": "exports.expire_exports", "schedule": 600.0},
    "sweep-notifications": {"task": "alerts.sweep_notifications", "schedule": 60.0},  # lost news
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # channels-redis blocks up to 5 s waiting for a message; the socket timeout must be
            # longer, or an idle WebSocket's receive times out and the consumer dies (1011).
            "hosts": [{"address": env_str("CHANNELS_REDIS_URL", REDIS_URL), "socket_timeout": 15}],
            "prefix": env_str("CHANNELS_PREFIX", "netmon:asgi"),
            "capacity": 200,
            "expiry": 30,
        },
    }
}

# --- REST framework ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "netmon.auth.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Every view declares the Django permission each of its methods needs (``required_permissions``);
    # a method without one is refused. The roles that hold them: netmon/roles.py.
    "DEFAULT_PERMISSION_CLASSES": ["capture.permissions.HasPermission"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "netmon.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "netmon.api.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"login": env_str("NETMON_LOGIN_RATE", "20/min")},
    # Rate limits count per client address. Trust X-Forwarded-For only as far as our own proxies:
    # with DRF's default (None) any client's header was believed, so a password guesser sending a
    # new one with every attempt was never limited.
    "NUM_PROXIES": env_int("NETMON_NUM_PROXIES", 1 if env_bool("BEHIND_TLS_PROXY") else 0),
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")
SPECTACULAR_SETTINGS = {
    "TITLE": "Netmon API",
    "DESCRIPTION": "Capture state, configuration, packets, flows, anomalies, models and encrypted exports.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # netmon.api.SchemaView and DocsView say what they need; a plain view routed by mistake is refused.
    "SERVE_PERMISSIONS": ["capture.permissions.HasPermission"],
    "COMPONENT_SPLIT_REQUEST": True,
    # The errors every operation can answer with (401, 404, 429, ...), documented once.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "netmon.openapi.add_error_responses",
    ],
    # One name for the algorithm choices, whether a field is called algorithm or encryption_algorithm.
    # One name per choice set, whichever app or field uses it. (".choices": drf-spectacular matches
    # (value, label) pairs, and the fields carry the vocabulary's labels, not its member names.)
    "ENUM_NAME_OVERRIDES": {
        "EncryptionAlgorithmEnum": "capture.choices.EncryptionAlgorithm.choices",
        "MlModelEnum": "capture.choices.MlModel.choices",
        "FeatureLevelEnum": "capture.choices.FeatureLevel.choices",
        "AnalysisDepthEnum": "capture.choices.AnalysisDepth.choices",
        "IncidentStatusEnum": "capture.choices.IncidentStatus.choices",
        "IncidentKindEnum": "capture.choices.IncidentKind.choices",
        "IncidentSeverityEnum": "capture.choices.IncidentSeverity.choices",
    },
}

# --- auth, static, i18n ---
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
if NETMON_ENV == "test":
    # A password hash costs ~0.2 s on purpose (PBKDF2, a million rounds) and the suite makes and
    # logs in thousands of users: minutes of CPU per pass. The test environment alone hashes with
    # a fast hasher; development and production keep Django's defaults.
    from django.conf import global_settings

    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *global_settings.PASSWORD_HASHERS]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "netmon" / "static"]
WHITENOISE_USE_FINDERS = True

# --- security: production turns on what `check --deploy` asks for ---
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY") else None
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Admin and /metrics answer only to these client addresses unless NETMON_ADMIN_ALLOW_REMOTE=1.
NETMON_TOKEN_TTL_HOURS = env_int("NETMON_TOKEN_TTL_HOURS", 24 * 30)  # 0: tokens never expire
NETMON_LOCAL_ONLY_PATHS = ("/admin/", "/metrics")
NETMON_LOCAL_ADDRESSES = env_list("NETMON_LOCAL_ADDRESSES", "127.0.0.1,::1")
NETMON_ADMIN_ALLOW_REMOTE = env_bool("NETMON_ADMIN_ALLOW_REMOTE", False)

# --- Netmon ---
NETMON_SENSOR = env_str("NETMON_SENSOR")  # default sensor name: the host name
NETMON_BATCH_SIZE = env_int("NETMON_BATCH_SIZE", 1000)
NETMON_INGEST_TASK = env_str("NETMON_INGEST_TASK", "detection.ingest_sensor")
NETMON_MODEL_DIR = Path(env_str("NETMON_MODEL_DIR", str(VAR_DIR / "models")))
# Trained thresholds aim at this many false incidents a day per sensor on traffic like the training
# data (detection/calibration.py); e.g. 0.1 for one in ten days.
NETMON_FALSE_INCIDENTS_PER_DAY = env_float("NETMON_FALSE_INCIDENTS_PER_DAY", 24.0, above=0.0)
NETMON_EXPORT_DIR = Path(env_str("NETMON_EXPORT_DIR", str(VAR_DIR / "exports")))
NETMON_EXPORT_KEYS = env_str("NETMON_EXPORT_KEYS")  # "id:base64key,id2:base64key"
NETMON_EXPORT_HMAC_KEY = env_str("NETMON_EXPORT_HMAC_KEY")
NETMON_EXPORT_MAX_AGE_HOURS = env_int("NETMON_EXPORT_MAX_AGE_HOURS", 72)
# Exports a user may have queued or running at once (0: no limit): one user cannot fill the queue.
NETMON_EXPORT_MAX_ACTIVE_PER_USER = env_int("NETMON_EXPORT_MAX_ACTIVE_PER_USER", 3)
# Evidence pcap (capture/evidence.py): the raw frames capture read, in a rolling ring per sensor,
# bounded by size and by age; 0 for either turns it off. Web, export worker and capture share the dir.
NETMON_EVIDENCE_DIR = Path(env_str("NETMON_EVIDENCE_DIR", str(VAR_DIR / "evidence")))
NETMON_EVIDENCE_MAX_MB = env_int("NETMON_EVIDENCE_MAX_MB", 1024)
NETMON_EVIDENCE_MAX_AGE_HOURS = env_float("NETMON_EVIDENCE_MAX_AGE_HOURS", 24.0)
for _name, _value in (
    ("NETMON_EVIDENCE_MAX_MB", NETMON_EVIDENCE_MAX_MB),
    ("NETMON_EVIDENCE_MAX_AGE_HOURS", NETMON_EVIDENCE_MAX_AGE_HOURS),
):
    if _value < 0:
        raise ImproperlyConfigured(f"{_name}={_value!r}: use 0 (evidence off) or a positive number")
NETMON_RETENTION_PACKETS = env_int("NETMON_RETENTION_PACKETS", 5_000_000)
NETMON_RETENTION_DAYS = env_int("NETMON_RETENTION_DAYS", 7)
# Lifetime of a suppression rule made from an incident when none is given (0: it never expires).
NETMON_SUPPRESSION_DEFAULT_HOURS = env_int("NETMON_SUPPRESSION_DEFAULT_HOURS", 24)

# GeoIP and ASN (capture/geo.py): by default the data geoip2fast ships; a MaxMind-format .mmdb
# (country or city) and an ASN .mmdb may be named instead. NETMON_GEOIP=0 turns lookups off.
NETMON_GEOIP = env_bool("NETMON_GEOIP", True)
NETMON_GEOIP_MMDB = env_str("NETMON_GEOIP_MMDB")
NETMON_GEOIP_ASN_MMDB = env_str("NETMON_GEOIP_ASN_MMDB")
# --- notifications (alerts app) ---
# Apprise URLs notified when an incident opens or rises in severity, besides the destinations admins
# keep in the admin. Separated by white space, or by commas that start a new URL (a comma inside a
# URL, e.g. mailto's ?to=a@x,b@x, stays). One apprise cannot parse is named in a warning at start-up
# (alerts/apps.py) and skipped.
NETMON_NOTIFY_URLS = env_str("NETMON_NOTIFY_URLS")
# The least severity NETMON_NOTIFY_URLS are told about: low, medium or high.
NETMON_NOTIFY_MIN_SEVERITY = env_str("NETMON_NOTIFY_MIN_SEVERITY", IncidentSeverity.LOW).strip().lower()
if NETMON_NOTIFY_MIN_SEVERITY not in IncidentSeverity.values:
    raise ImproperlyConfigured(
        f"NETMON_NOTIFY_MIN_SEVERITY={NETMON_NOTIFY_MIN_SEVERITY!r}: use {', '.join(IncidentSeverity.values)}"
    )
# Messages per destination per minute; more are dropped, counted and summed up in the next message.
NETMON_NOTIFY_RATE_PER_MINUTE = env_int("NETMON_NOTIFY_RATE_PER_MINUTE", 10)
# Attempts per message before it is marked failed; the wait doubles from NETMON_NOTIFY_BACKOFF seconds.
NETMON_NOTIFY_ATTEMPTS = env_int("NETMON_NOTIFY_ATTEMPTS", 5)
NETMON_NOTIFY_BACKOFF = env_float("NETMON_NOTIFY_BACKOFF", 30.0, above=0.0)
NETMON_NOTIFY_TIMEOUT = env_float("NETMON_NOTIFY_TIMEOUT", 15.0, above=0.0)  # seconds per attempt
# The base of the links in messages (the dashboard's address as operators reach it).
NETMON_PUBLIC_URL = env_str("NETMON_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
for _name, _value in (("NETMON_NOTIFY_RATE_PER_MINUTE", NETMON_NOTIFY_RATE_PER_MINUTE),
                      ("NETMON_NOTIFY_ATTEMPTS", NETMON_NOTIFY_ATTEMPTS)):  # fmt: skip
    if _value < 1:
        raise ImproperlyConfigured(f"{_name}={_value}: use a whole number of at least 1")

# --- SIEM output (detection/siem.py, detection/eve.py) ---
# Community IDs of flows, anomalies and incidents, computed at ingest (0: none are computed).
NETMON_COMMUNITY_ID = env_bool("NETMON_COMMUNITY_ID", True)
# Suricata EVE JSON alert lines of incidents appended to this file ("": no file).
NETMON_EVE_LOG = env_str("NETMON_EVE_LOG")
# ... and/or sent to a syslog receiver as RFC 5424 messages: udp://host:514 or tcp://host:601 ("": none).
NETMON_SYSLOG_ADDR = env_str("NETMON_SYSLOG_ADDR")
# Also an alert line per anomaly a read stores (its highest-scoring ones, as the dashboard gets them).
NETMON_EVE_ANOMALIES = env_bool("NETMON_EVE_ANOMALIES", False)


def _syslog_address(name: str, raw: str) -> tuple[str, str, int] | None:
    """``udp://host:port`` or ``tcp://host:port`` (IPv6 hosts in brackets) -> (transport, host, port)."""
    if not raw:
        return None
    from urllib.parse import urlsplit

    usage = f"{name}={raw!r}: use udp://host:port or tcp://host:port, e.g. udp://127.0.0.1:514"
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(usage) from None
    if parts.scheme not in ("udp", "tcp") or not parts.hostname or port is None or not 0 < port < 65536:
        raise ImproperlyConfigured(usage)
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ImproperlyConfigured(usage)
    return parts.scheme, parts.hostname, port


NETMON_SYSLOG = _syslog_address("NETMON_SYSLOG_ADDR", NETMON_SYSLOG_ADDR)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "netmon.logging.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if env_bool("NETMON_JSON_LOGS", PRODUCTION) else "plain",
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # communityid logs every hashed byte at INFO (capture.community calls it for API pages)
    "loggers": {"django.db.backends": {"level": "WARNING"}, "communityid": {"level": "WARNING"}},
}
