"""EDM settings, read from the environment (12-factor).

Every variable is documented in the README. ``DEBUG`` selects development defaults;
with ``DEBUG`` off (production) the development defaults for ``SECRET_KEY``,
``EDM_ENCRYPTION_KEY`` and ``ALLOWED_HOSTS`` are refused, so a production start-up
never silently runs on a key that is published in this repository.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from edm.env import (
    ConfigError,
    env_bool,
    env_database,
    env_fernet_keys,
    env_int,
    env_list,
    env_rate,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = Path(env_str("EDM_STATE_DIR", str(BASE_DIR / ".edm")))

DEBUG = env_bool("DEBUG", False)

_DEV_SECRET_KEY = "dev-insecure-edm-secret-key-do-not-use-in-production"
# A fixed, published Fernet key: only ever acceptable with DEBUG on.
_DEV_ENCRYPTION_KEY = "ZGV2LWluc2VjdXJlLWVkbS1mZXJuZXQta2V5LTAwMDA="

SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET_KEY if DEBUG else None)
EDM_ENCRYPTION_KEYS = env_fernet_keys("EDM_ENCRYPTION_KEY", _DEV_ENCRYPTION_KEY if DEBUG else None)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])

if not DEBUG:
    if SECRET_KEY == _DEV_SECRET_KEY or len(SECRET_KEY) < 32:
        raise ConfigError(
            "SECRET_KEY must be a private value of at least 32 characters when DEBUG is off"
        )
    if _DEV_ENCRYPTION_KEY in EDM_ENCRYPTION_KEYS:
        raise ConfigError("EDM_ENCRYPTION_KEY is the development key; set a private one")
    if not ALLOWED_HOSTS:
        raise ConfigError("ALLOWED_HOSTS is not set (comma-separated host names)")

INSTALLED_APPS = [
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
    "drf_spectacular_sidecar",
    # Before django_q: its qcluster command is apps.core's (a clean stop at SIGTERM).
    "apps.core",
    "django_q",
    "django_prometheus",
    "simple_history",
    "axes",
    "corsheaders",
    "anymail",
    "apps.config",
    "apps.contacts",
    "apps.services",
    "apps.dispatch",
    "apps.monitoring",
    "apps.deliverability",
    "apps.events",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "apps.core.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the body: oversized, over-deep or NUL-carrying API requests
    # are answered 413/400 in the API's error shape.
    "apps.core.middleware.ApiRequestLimitsMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    # Serves admin and API-docs assets in production (gunicorn), no CDN, no extra server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "apps.core.query_params.ApiQueryParametersMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    # Last of the request middlewares: answers a login refused by the rate limit.
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "edm.urls"
WSGI_APPLICATION = "edm.wsgi.application"
ASGI_APPLICATION = "edm.asgi.application"

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

DATABASES = {"default": env_database("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env_int("CONN_MAX_AGE", 60)
# A persistent connection the server dropped meanwhile is replaced before a request
# uses it; the backend (apps.core.postgresql) asks the server only when the connection
# has something to read.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("OPTIONS", {})
DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 5)
# Behind PgBouncer in transaction mode (the compose file's cluster nodes): every
# transaction may run on another server connection, so nothing may outlive one — no
# server-side cursors, and no statements prepared by psycopg (PgBouncer 1.18 cannot map
# them). EDM itself takes only transaction-scoped locks. LISTEN does not carry through
# such a pooler: dispatchers then poll (a new task waits at most a second).
EDM_DATABASE_POOLER = env_str("EDM_DATABASE_POOLER", "")
if EDM_DATABASE_POOLER not in {"", "transaction"}:
    raise ConfigError(f"EDM_DATABASE_POOLER={EDM_DATABASE_POOLER!r} must be empty or 'transaction'")
if EDM_DATABASE_POOLER == "transaction":
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    # First: refuses logins of a username+address that failed too often (django-axes).
    "apps.core.auth.LoginRateLimitBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = STATE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Development serves assets straight from the apps; production from collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_ROOT = STATE_DIR / "media"
MEDIA_URL = "media/"
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# Request size limits. A JSON body of the API may be at most EDM_API_MAX_BODY_BYTES (10 MiB:
# a 10,000-row bulk upsert, or a task with two 2 MB bodies, fits); a CSV import upload at
# most EDM_UPLOAD_MAX_BYTES; forms at most Django's DATA_UPLOAD_MAX_NUMBER_FIELDS fields.
# Over a limit the API answers 413 (fields: 400) in its error shape before reading the body.
EDM_API_MAX_BODY_BYTES = env_int("EDM_API_MAX_BODY_BYTES", 10 * 1024 * 1024)
EDM_UPLOAD_MAX_BYTES = env_int("EDM_UPLOAD_MAX_BYTES", 1024 * 1024 * 1024)
# JSON nested deeper than this is refused (contact attributes are a few levels deep).
EDM_API_MAX_JSON_DEPTH = env_int("EDM_API_MAX_JSON_DEPTH", 32)
DATA_UPLOAD_MAX_MEMORY_SIZE = EDM_API_MAX_BODY_BYTES
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Transport security (production values in the README) -------------------------------
SECURE_COOKIES = env_bool("EDM_SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_HSTS_SECONDS = env_int("EDM_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("EDM_HSTS_INCLUDE_SUBDOMAINS", SECURE_HSTS_SECONDS > 0)
SECURE_HSTS_PRELOAD = env_bool("EDM_HSTS_PRELOAD", SECURE_HSTS_SECONDS > 0)
SECURE_SSL_REDIRECT = env_bool("EDM_SSL_REDIRECT", False)
# Liveness and scrapes come from inside the network over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^api/health$", r"^metrics$"]
# Behind a TLS-terminating proxy: the header it sets, e.g. "X-Forwarded-Proto" (value
# "https" means the client used TLS). Empty: not behind such a proxy (the default).
_PROXY_SSL_HEADER = env_str("EDM_PROXY_SSL_HEADER", "")
if _PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = (
        "HTTP_" + _PROXY_SSL_HEADER.strip().upper().replace("-", "_"),
        "https",
    )
# How many proxies stand in front of the web server (X-Forwarded-For entries to skip to
# find the client's address, for throttling and the login rate limit). 0: none.
EDM_NUM_PROXIES = env_int("EDM_NUM_PROXIES", 0)

# Cross-origin requests: closed unless origins are listed.
CORS_ALLOWED_ORIGINS = env_list("EDM_CORS_ALLOWED_ORIGINS", [])
CORS_URLS_REGEX = r"^/api/.*$"

# Login rate limit of the admin and the token endpoint (django-axes): after
# EDM_LOGIN_FAILURE_LIMIT failures of one username from one address, logins of that
# pair are refused (429) for EDM_LOGIN_COOLOFF_MINUTES; a success resets the count.
AXES_FAILURE_LIMIT = env_int("EDM_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("EDM_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "apps.core.auth.lockout_response"
AXES_USERNAME_CALLABLE = "apps.core.auth.login_username"
AXES_IPWARE_PROXY_COUNT = EDM_NUM_PROXIES or None
AXES_VERBOSE = False

# --- REST API -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.core.tokens.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "apps.core.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "apps.core.schema.AutoSchema",
    "EXCEPTION_HANDLER": "apps.core.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_PARSER_CLASSES": [
        "apps.core.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # Per authenticated user and per client address (every request); the token endpoint
    # also per address for its anonymous callers ("anon"). Counted in the default cache:
    # per web process (a client can reach a rate times the number of web processes).
    # "off" disables one.
    "DEFAULT_THROTTLE_CLASSES": [
        "apps.core.throttling.UserThrottle",
        "apps.core.throttling.AddressThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_rate("EDM_THROTTLE_USER", "100/s"),
        "address": env_rate("EDM_THROTTLE_ADDRESS", "200/s"),
        "anon": env_rate("EDM_THROTTLE_ANON", "30/min"),
    },
    "NUM_PROXIES": EDM_NUM_PROXIES or None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "EDM API",
    "DESCRIPTION": "Bulk e-mail: contacts, tags, email services, send tasks, monitoring.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI assets come from the installed sidecar package: nothing from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The one error shape (``apps.core.api``), referenced by every operation's 4xx.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.core.schema.error_responses",
    ],
    # The schema and docs describe every endpoint: authenticated like the API itself.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Several models have a "status" field with different choices: name each enum.
    "ENUM_NAME_OVERRIDES": {
        "ContactStatusEnum": "apps.contacts.models.Contact.Status",
        "TaskStatusEnum": "apps.dispatch.models.Task.Status",
        "SubTaskStatusEnum": "apps.dispatch.models.SubTask.Status",
        "DeadLetterStatusEnum": "apps.dispatch.models.DeadLetter.Status",
        "AlertStatusEnum": "apps.monitoring.models.Alert.Status",
        "AlertLevelEnum": "apps.monitoring.models.Level",
        "ChannelKindEnum": "apps.monitoring.models.NotificationChannel.Kind",
        "ServiceKindEnum": "apps.services.models.EmailService.Kind",
        "WebhookDeliveryStatusEnum": "apps.events.models.WebhookDelivery.Status",
    },
}

# --- Metrics ---------------------------------------------------------------------------
# /metrics is open by default (scraped from a private network); set a token to require
# "Authorization: Bearer <token>".
EDM_METRICS_TOKEN = env_str("EDM_METRICS_TOKEN", "")
PROMETHEUS_EXPORT_MIGRATIONS = False
# The processes of one node (web and q2 cluster) share their counters through this
# directory when it is set (prometheus_client's multiprocess mode); empty it at start.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "")
# Coarse request-latency buckets, and per-view request metrics only for these views
# (the others are summed as view="other"): a scrape stays small.
PROMETHEUS_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, float("inf"))
EDM_METRICS_VIEWS = env_list(
    "EDM_METRICS_VIEWS",
    [
        "health",
        "auth-token",
        "task-list",
        "task-detail",
        "task-queue",
        "contact-bulk",
        "monitoring-system-health",
        "monitoring-queue-status",
        "monitoring-alerts",
    ],
)

# --- Outbound HTTP (alert channels, webhooks: apps.core.outbound) -----------------------
# Loopback, private and link-local addresses are refused unless this is set (tests,
# private networks); plain http:// only with DEBUG on unless EDM_OUTBOUND_HTTPS_ONLY says so.
EDM_WEBHOOKS_ALLOW_PRIVATE = env_bool("EDM_WEBHOOKS_ALLOW_PRIVATE", False)
# bench/bench_api.py's ceiling: /api/bench/constant, a bare view with a constant JSON body
# behind the same middleware. Mounted only when this is on; never in production.
EDM_BENCH_ENDPOINTS = env_bool("EDM_BENCH_ENDPOINTS", False)
# How long a web process remembers an API token's user (apps.core.auth); 0: never.
EDM_TOKEN_CACHE_SECONDS = env_int("EDM_TOKEN_CACHE_SECONDS", 5)
# How old the progress in the API's detail of a task may be while its row is unchanged,
# read at most once per this many seconds per web process (apps.dispatch.selectors); a
# change of the row (its status) reads it at once; 0: every request.
EDM_PROGRESS_SECONDS = env_int("EDM_PROGRESS_SECONDS", 1)
EDM_OUTBOUND_HTTPS_ONLY = env_bool("EDM_OUTBOUND_HTTPS_ONLY", not DEBUG)

# --- Events (apps.events, apps.core.audit) --------------------------------------------
# Off only to measure or shed the dispatcher's high-volume events (subtask.sent, …,
# task.started); every other change is recorded whatever this says.
EDM_EVENTS_ENABLED = env_bool("EDM_EVENTS_ENABLED", True)

# --- django-q2 ------------------------------------------------------------------------
# The ORM broker on the same PostgreSQL. ``timeout`` stays well below ``retry`` so q2
# never hands a still-running task (a dispatcher loop) to a second worker. Five workers:
# two dispatcher loops, the monitor loop, the events relay loop, and one for jobs.
Q_CLUSTER = {
    "name": "edm",
    "orm": "default",
    "workers": env_int("EDM_Q_WORKERS", 5),
    "timeout": 300,
    "retry": 600,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 2000,
    "poll": 0.2,
    "label": "Task queue (django-q2)",
}

# --- Mail sink (development) -----------------------------------------------------------
EDM_SINK_HOST = env_str("EDM_SINK_HOST", "127.0.0.1")
EDM_SINK_PORT = env_int("EDM_SINK_PORT", 2525)
EDM_SINK_DIR = Path(env_str("EDM_SINK_DIR", str(STATE_DIR / "mail")))

# Django's own mail (operator notifications) goes to the sink unless configured.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", EDM_SINK_HOST)
EMAIL_PORT = env_int("EMAIL_PORT", EDM_SINK_PORT)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "edm@localhost")

# --- Deliverability --------------------------------------------------------------------
# The public address of this installation: unsubscribe, preferences and tracking links in
# every message start with it (https in production: RFC 8058 one-click needs it). Default:
# the development server, or https:// and the first of ALLOWED_HOSTS in production.
EDM_PUBLIC_URL = env_str(
    "EDM_PUBLIC_URL",
    "http://127.0.0.1:8000" if DEBUG or not ALLOWED_HOSTS else f"https://{ALLOWED_HOSTS[0]}",
).rstrip("/")
# Domain of the mailto: unsubscribe address (unsubscribe+<token>@domain) and of the VERP
# return path (bounces+<token>@domain); the mailbox behind it is read by process_inbound.
# Empty: the mailto address uses the task's Message-ID domain and the envelope sender
# stays the service's From address.
EDM_BOUNCE_DOMAIN = env_str("EDM_BOUNCE_DOMAIN", "").strip().lower()
# Shared secret (whsec_… Standard Webhooks key) of the generic signed JSON feedback hook.
EDM_FEEDBACK_WEBHOOK_SECRET = env_str("EDM_FEEDBACK_WEBHOOK_SECRET", "")
# A nameserver "host[:port]" for the DNS check of the admin (default: the system's).
EDM_DNS_NAMESERVER = env_str("EDM_DNS_NAMESERVER", "")
# django-anymail's tracking webhooks (/inbound/<esp>/tracking/): basic-auth credentials
# "user:password" put in the URL given to the provider, plus the providers' own keys.
ANYMAIL = {
    "WEBHOOK_SECRET": env_str("EDM_ANYMAIL_WEBHOOK_SECRET", "") or None,
    "MAILGUN_WEBHOOK_SIGNING_KEY": env_str("EDM_MAILGUN_WEBHOOK_SIGNING_KEY", "") or None,
    "POSTAL_WEBHOOK_KEY": env_str("EDM_POSTAL_WEBHOOK_KEY", "") or None,
}
ANYMAIL = {key: value for key, value in ANYMAIL.items() if value}

# --- Logging ---------------------------------------------------------------------------
LOG_FORMAT = env_str("LOG_FORMAT", "text" if DEBUG else "json")
if LOG_FORMAT not in {"text", "json"}:
    raise ConfigError(f"LOG_FORMAT={LOG_FORMAT!r} must be 'text' or 'json'")
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ConfigError(f"LOG_LEVEL={LOG_LEVEL!r} is not a logging level")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "apps.core.logging.RequestIdFilter"},
        "redact": {"()": "apps.core.logging.RedactSecretsFilter"},
    },
    "formatters": {
        "text": {
            "format": "%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s",
        },
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id", "redact"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "django_q": {"level": "WARNING" if not DEBUG else "INFO"},
        # aiosmtpd logs every SMTP command at INFO; the sink logs one line per message.
        "mail.log": {"level": "WARNING"},
    },
}

# --- Sentry (optional) -----------------------------------------------------------------
SENTRY_DSN = env_str("SENTRY_DSN", "")
if SENTRY_DSN:
    import sentry_sdk

    sentry_sdk.init(dsn=SENTRY_DSN, send_default_pii=False, traces_sample_rate=0.0)
