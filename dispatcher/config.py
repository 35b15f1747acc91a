"""The one place configuration comes from: ``DISPATCHER_*`` environment variables."""

from __future__ import annotations

from datetime import time
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dispatcher.channels.easemob_apps import DEFAULT_APP, EasemobAppConfig, check_app_names
from dispatcher.channels.wechat_config import WeChatConfig, WindowFallback
from dispatcher.cluster import is_cluster_url
from dispatcher.ids import DEFAULT_NAMESPACE, NAMESPACE_PATTERN
from dispatcher.limits import MAX_BATCH_REQUEST_BYTES, MAX_REQUEST_BYTES
from dispatcher.priority import DEFAULT_PRIORITY, Priority
from dispatcher.routing import Routing
from dispatcher.webhooks.config import Subscriptions, WebhookEndpoint, parse_schedule


class ClientConfig(BaseModel):
    """An upstream caller of the HTTP API: its signing secret and allowed channels."""

    # A misspelt flag must not be ignored silently: this is the security configuration.
    model_config = ConfigDict(extra="forbid")

    secret: SecretStr
    channels: list[str] = Field(default_factory=list)
    admin: bool = False
    legacy_signing: bool = False
    """Also accept the seed's signature (query + body; no timestamp needed): docs/security.md."""
    md5: bool = False
    """Also accept HMAC-MD5 signs (32 hex characters)."""
    routing: Routing | None = None
    """How the center picks this client's channels (docs/channels.md); unset: DISPATCHER_ROUTING."""
    wechat: WeChatConfig | None = None
    """The client's own WeChat app (docs/channels.md); unset: the DISPATCHER_WECHAT_* app."""
    webhooks: list[WebhookEndpoint] = Field(default_factory=list)
    """Where the client's message events are pushed (docs/webhooks.md)."""
    easemob_app: str | None = None
    """The DISPATCHER_EASEMOB_APPS app its Easemob messages go through; unset: the
    DISPATCHER_EASEMOB_* app (docs/operations.md, "Priorities, weights and Easemob apps")."""
    max_priority: Priority = DEFAULT_PRIORITY
    """The highest ``priority`` its submits may ask for (higher: 403)."""
    weight: int = Field(default=1, ge=1, le=1000)
    """Its share of a provider's limit against other clients of the same priority (recorded;
    the scheduling that uses it is not built yet)."""


class Settings(BaseSettings):
    """Every setting of dispatcher. Read once per process; see README for the table."""

    model_config = SettingsConfigDict(env_prefix="DISPATCHER_", extra="ignore")

    # Redis and Celery
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str | None = None
    queue: str = "dispatcher"
    visibility_timeout: int = Field(default=15, ge=1)
    # Delivery is I/O-bound: threads, 32 per process, and one worker process per core won
    # benchmark P2 (README "Benchmarks"; prefork -c 2 delivers ~12x less behind 50 ms calls).
    worker_pool: Literal["threads", "prefork", "solo", "gevent", "eventlet"] = "threads"
    worker_concurrency: int = 32

    # Load bounds (docs/operations.md, "Load bounds"): pools wait, overload answers 503 at once
    redis_pool_timeout: float = Field(default=5.0, gt=0)
    redis_max_connections: int = Field(default=64, ge=1)
    api_redis_connections: int = Field(default=64, ge=1)
    api_max_submits_in_flight: int = Field(default=1024, ge=1)
    busy_retry_after: int = Field(default=1, ge=1)

    # Redis Sentinel (docs/deployment.md): a submit's record confirmed on this many replicas
    redis_min_replicas: int = Field(default=0, ge=0)
    redis_min_replicas_timeout: float = Field(default=1.0, gt=0)

    # Easemob
    easemob_base_url: str = "https://a1.easemob.com"
    easemob_org: str | None = None
    easemob_app: str | None = None
    easemob_client_id: str | None = None
    easemob_client_secret: SecretStr | None = None
    easemob_timeout: float = 10.0
    easemob_max_body_bytes: int = 5120
    easemob_calls_per_second: int = 100
    easemob_messages_per_minute: int = 6000
    easemob_callback_secret: SecretStr | None = None
    easemob_callback_window: int = Field(default=300, ge=1)
    easemob_apps: dict[str, EasemobAppConfig] = Field(default_factory=dict)
    """Named Easemob apps a client's ``easemob_app`` may name, each with its own
    credentials, token and limits (docs/operations.md)."""

    # WeChat Official Account (docs/channels.md); unset fields take WeChatConfig's defaults
    wechat_appid: str | None = None
    wechat_secret: SecretStr | None = None
    wechat_base_url: str | None = None
    wechat_templates: dict[str, str] | None = None
    wechat_window_fallback: WindowFallback | None = None
    wechat_server_token: SecretStr | None = None
    wechat_calls_per_second: float | None = None
    wechat_daily_quotas: dict[str, int] | None = None
    wechat_quota_resume_time: time | None = None
    wechat_timezone: str | None = None
    wechat_timeout: float | None = None

    # Routing for callers without their own (docs/channels.md)
    routing: Routing | None = None

    # Qiniu
    qiniu_access_key: str | None = None
    qiniu_secret_key: SecretStr | None = None
    qiniu_bucket: str | None = None
    qiniu_domain: str | None = None
    qiniu_private: bool = False
    qiniu_url_lifetime: int = 3600
    qiniu_up_host: str = "https://up.qiniup.com"
    qiniu_rs_host: str = "https://rs.qiniu.com"
    qiniu_timeout: float = 10.0

    # HTTP API
    clients: dict[str, ClientConfig] = Field(default_factory=dict)
    auth_enabled: bool = True
    api_host: str = "127.0.0.1"
    api_port: int = 8087
    max_request_bytes: int = Field(default=MAX_REQUEST_BYTES, ge=1)
    max_batch_request_bytes: int = Field(default=MAX_BATCH_REQUEST_BYTES, ge=1)
    signature_window: int = 300
    submit_rate_per_second: float = 1000.0
    submit_burst: int = 2000
    timezone: str = "Asia/Shanghai"
    service_phone: str = "400800400"
    metrics_token: SecretStr | None = None
    api_docs: bool = True
    dev_allow_no_auth: bool = False

    # Messages and delivery
    producer_namespace: str = Field(default=DEFAULT_NAMESPACE, pattern=NAMESPACE_PATTERN.pattern)
    """Whose caller-chosen ids ``Dispatcher.submit`` uses: a client's id, or the in-process
    default (docs/architecture.md, "Message references")."""
    id_prefix: str = Field(default="m0", pattern=r"^[A-Za-z0-9]{1,8}$")
    status_ttl: int = 604800
    history_limit: int = 50
    max_attempts: int = 8
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    # A provider's Retry-After is obeyed up to this: a guard against an answer that would
    # park a message for days (docs/reliability.md, "The state machine").
    retry_after_cap: float = Field(default=600.0, gt=0)
    lease_seconds: int = 60
    reaper_interval: float = 2.0
    shutdown_grace: float = 20.0
    queued_grace: int = 300
    publish_grace: int = Field(default=15, gt=0)
    retry_grace: int = 30
    max_requeues: int = 5
    # A worker process that stops beating for this long is dead (docs/reliability.md, "Recovery")
    worker_timeout: float = Field(default=10.0, gt=0)
    # Messages per delivery task (docs/architecture.md, "The doorbell"): a ring task drains
    # up to this many waiting messages and runs their attempts concurrently; 0 (the
    # default for now) publishes one task per message. Refused with a Redis Cluster store.
    delivery_batch: int = Field(default=0, ge=0, le=256)

    # Scheduled delivery, cancel and recall (docs/api.md, "Send later, cancel, recall")
    schedule_max_days: float = Field(default=30.0, gt=0)
    scheduler_interval: float = Field(default=0.2, ge=0)
    easemob_recall_window: int = Field(default=120, ge=0)

    # Redis health (F6 in docs/reliability.md): refuse new submissions from this fraction of maxmemory
    memory_refuse_ratio: float = Field(default=0.9, ge=0, le=1)
    memory_check_interval: float = Field(default=2.0, ge=0)

    # Operator console (docs/console.md)
    console_enabled: bool = True
    console_password: SecretStr | None = None
    console_session_secret: SecretStr | None = None
    console_session_seconds: int = Field(default=28800, ge=60)

    # Status webhooks (docs/webhooks.md)
    webhook_retry_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    webhook_allow_loopback: bool = False
    webhook_timeout: float = Field(default=15.0, gt=0)
    webhook_queue: str = "webhooks"
    webhook_disable_after: int = Field(default=432000, ge=60)
    webhook_claim_seconds: int = Field(default=60, ge=5)
    webhook_poll_interval: float = Field(default=0.5, gt=0)
    webhook_batch: int = Field(default=50, ge=1, le=100)

    # Logging
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("easemob_base_url", "qiniu_up_host", "qiniu_rs_host")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("clients")
    @classmethod
    def _client_ids_name_namespaces(cls, value: dict[str, ClientConfig]) -> dict[str, ClientConfig]:
        # A client's id is the namespace of its messages, and part of their Redis keys.
        for name in value:
            if not NAMESPACE_PATTERN.fullmatch(name):
                raise ValueError(
                    f"client id {name[:80]!r} must be 1..64 characters of A-Z a-z 0-9 . _ ~ -"
                )
        return value

    @field_validator("easemob_apps")
    @classmethod
    def _app_names(cls, value: dict[str, EasemobAppConfig]) -> dict[str, EasemobAppConfig]:
        return check_app_names(value)

    @model_validator(mode="after")
    def _clients_name_known_apps(self) -> Settings:
        for name, client in self.clients.items():
            app = client.easemob_app
            if app is not None and app != DEFAULT_APP and app not in self.easemob_apps:
                known = ", ".join(sorted(self.easemob_apps)) or "none"
                raise ValueError(
                    f"client {name!r} names Easemob app {app[:40]!r}, not in "
                    f"DISPATCHER_EASEMOB_APPS (configured: {known})"
                )
        return self

    @field_validator("qiniu_domain")
    @classmethod
    def _normalise_domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.rstrip("/")
        return value if "://" in value else f"http://{value}"

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @model_validator(mode="after")
    def _check_cluster(self) -> Settings:
        """A Redis Cluster status store needs another broker (docs/deployment.md)."""
        if not is_cluster_url(self.redis_url):
            return self
        if self.broker_url is None or is_cluster_url(self.broker_url):
            raise ValueError(
                "a Redis Cluster status store (redis+cluster://) needs DISPATCHER_BROKER_URL "
                "naming another broker (RabbitMQ, a Redis or a Sentinel set): Celery's Redis "
                "transport cannot use a cluster"
            )
        if self.redis_min_replicas:
            raise ValueError("DISPATCHER_REDIS_MIN_REPLICAS does not apply to a Redis Cluster")
        if self.delivery_batch:
            raise ValueError(
                "DISPATCHER_DELIVERY_BATCH does not apply to a Redis Cluster status store: the "
                "doorbell's pending lists are fleet-wide keys its scripts use beside every "
                "shard's (cross-slot); keep it 0 (one task per message)"
            )
        return self

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def webhook_schedule(self) -> tuple[float, ...]:
        """Seconds before each webhook attempt, the first counted from the event."""
        return parse_schedule(self.webhook_retry_schedule)

    def webhook_subscriptions(self) -> Subscriptions:
        return Subscriptions({name: c.webhooks for name, c in self.clients.items()})


PROVIDER_CREDENTIALS = {
    "Easemob": ("easemob_org", "easemob_app", "easemob_client_id", "easemob_client_secret"),
    "Qiniu": ("qiniu_access_key", "qiniu_secret_key", "qiniu_bucket", "qiniu_domain"),
    "WeChat": ("wechat_appid", "wechat_secret"),
}
"""Settings that, all set, make ``dispatcher dev`` use the real provider, not its simulator."""


def unsafe_dev_mode(settings: Settings, *, auth: bool) -> str | None:
    """Why ``dispatcher dev`` must not start, or None.

    Dev mode turns signature checks off; in front of real providers that would let
    anyone who reaches the API send messages on the real account.
    """
    real = [
        name
        for name, fields in PROVIDER_CREDENTIALS.items()
        if all(getattr(settings, field) for field in fields)
        or (name == "Easemob" and settings.easemob_apps)  # named apps: real ones, maybe
    ]
    if auth or not real or settings.dev_allow_no_auth:
        return None
    return (
        f"refusing to start: real {' and '.join(real)} credentials are configured and dev mode "
        "turns signature checks off, so anyone reaching the API could send through them. "
        "Run `dispatcher dev --auth`, unset the credentials to use the simulators, or set "
        "DISPATCHER_DEV_ALLOW_NO_AUTH=true if this machine is yours alone."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings object (tests build their own ``Settings``)."""
    return Settings()
