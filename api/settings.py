"""Runtime configuration, read from the environment (prefix ``YIBAO_``) by pydantic-settings."""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEMO_PROVIDER = "demo"
WECHAT_PROVIDER = "wechat"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YIBAO_", extra="ignore")

    data_dir: Path = Path(".yibao")
    database_url: str | None = None
    """SQLAlchemy async URL; default: SQLite file ``yibao.db`` in the data dir."""
    key_dir: Path | None = None
    """Token-signing keys and the data-encryption key; default: ``<data_dir>/keys``."""
    data_key: SecretStr | None = None
    """Base64 of 32 bytes; overrides ``<key_dir>/data.key`` (encrypts ID numbers, keys look-up hashes)."""

    production: bool = False
    identity_providers: list[str] = Field(default_factory=lambda: [DEMO_PROVIDER, WECHAT_PROVIDER])
    graphiql: bool = True
    introspection: bool = True
    cors_origins: list[str] = Field(default_factory=list)
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses or CIDR networks of the reverse proxies / load balancers in front of the server. Only
    a request arriving from one of them has its X-Forwarded-For honoured (the client is the rightmost
    address that is not a trusted proxy); from anyone else the header is ignored, so that per-client
    limits (logins) cannot be walked around by a client that writes the header itself."""

    access_token_ttl_s: int = Field(default=900, ge=30, le=900)
    refresh_token_ttl_s: int = Field(default=30 * 24 * 3600, ge=300, le=90 * 24 * 3600)
    refresh_reuse_grace_seconds: int = Field(default=30, ge=0, le=120)
    """For this long after a rotation, the refresh token just rotated may be presented again and gets a
    new pair instead of ending the login: a phone whose refresh answer was lost retries with it. Only
    that one token, only until the pair it got is rotated in turn; 0 turns the grace off."""
    issuer: str = "yibao"

    wechat_code2session_url: str = "https://api.weixin.qq.com/sns/jscode2session"
    wechat_app_id: str = "wx-yibao-demo"
    wechat_app_secret: SecretStr = SecretStr("")
    wechat_timeout_s: float = Field(default=5.0, gt=0, le=30)

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    query_max_depth: int = Field(default=12, ge=3)
    query_max_tokens: int = Field(default=3000, ge=100)
    query_max_aliases: int = Field(default=30, ge=1)
    login_rate_limit: int = Field(default=60, ge=1)
    """Logins allowed per client address per minute. Generous: many residents share one carrier-NAT
    address, and WeChat codes are one-time anyway; this bounds floods, not guessing."""

    family_max_links: int = Field(default=5, ge=1, le=20)
    """Relatives one holder may link (pending requests count)."""
    family_request_ttl_h: int = Field(default=72, ge=1)
    """How long a relative has to confirm a link request."""
    family_proxy_ttl_h: int = Field(default=15 * 24, ge=1)
    """How long a proxy request (代办) waits for a reviewer."""
    family_proof_failures_limit: int = Field(default=5, ge=1)
    """Wrong name/ID-number pairs one account may submit per hour (against ID enumeration)."""
    voucher_ttl_s: int = Field(default=60, ge=10, le=600)
    voucher_rate_limit: int = Field(default=30, ge=1)
    """Vouchers and device certificates one account may get per minute."""
    voucher_skew_s: int = Field(default=30, ge=0, le=300)
    sync_retention_days: int = Field(default=30, ge=1, le=3650)
    """Change-log entries (tombstones included) are kept this long; a terminal whose checkpoint is
    older resyncs from a snapshot. Longer than any outage a clinic should ride out offline."""
    device_cert_validity_days: int = Field(default=30, ge=1, le=30)

    terminal_enrolment_ttl_h: int = Field(default=24, ge=1, le=14 * 24)
    """How long a terminal enrolment code (given to a clinic by an admin) stays usable, once."""
    terminal_enrol_rate_limit: int = Field(default=30, ge=1)
    """Enrolment attempts per client address per minute (the codes are unguessable; this bounds floods)."""
    terminal_clock_leeway_s: int = Field(default=120, ge=0, le=300)
    """Clock skew tolerated between a terminal and the server on a client assertion's `iat` and `exp`."""
    sync_audience: str | None = None
    """The `aud` every terminal's client assertion must carry: the server's /sync URL as terminals
    reach it, e.g. ``https://ybj.example.cn/sync``. Default: derived from each request (its scheme,
    host and root path, plus ``/sync``), which is right when terminals talk to the server directly.
    Behind a reverse proxy that rewrites the host or the scheme, set it. /sync/enrol tells the
    terminal the value (``audience``), so both ends always agree."""
    sync_max_inflated_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """A gzip request body to /sync may inflate to at most this; more is a 413 (a gzip bomb)."""
    sync_max_concurrent: int = Field(default=4, ge=1, le=20)
    """/sync/pull and /sync/push served at once per worker process (api.replication.admission). Each
    holds a database connection (the pool: 10 + 10 overflow per worker) and shares the worker's one
    core: beyond a few, more at once only makes each slower, until they outlast the terminal's 30 s
    request timeout."""
    sync_max_waiting: int = Field(default=8, ge=0, le=1000)
    """Sync requests per worker that may wait for a slot; beyond that they are answered 503 at once."""
    sync_max_wait_s: float = Field(default=5.0, gt=0, le=20)
    """The longest a sync request waits for a slot (and a request is queued only if the recent service
    time says it would be served sooner); then 503, so that the wait plus the work stays well within
    the terminal's 30 s timeout."""
    sync_retry_after_max_s: int = Field(default=20, ge=1, le=600)
    """The longest `Retry-After` a refused sync request is given (the schedule spreads returns up to it).
    Short, because a refusal is cheap (no database, ~0.1 ms) and a terminal told to stay away longer
    than the backlog lasts leaves the server idle at the end of a storm: the 800-terminal drain
    (bench/README.md) took 56-71 s with 60 and 47 s with 20."""

    demo_people: int = Field(default=3000, ge=50)
    demo_seed: int = 20260101
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("identity_providers")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        unknown = set(value) - {DEMO_PROVIDER, WECHAT_PROVIDER}
        if unknown:
            raise ValueError(f"unknown identity providers: {sorted(unknown)}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"trusted proxy {entry!r} is not an IP address or network") from None
        return value

    @model_validator(mode="after")
    def _production_is_locked_down(self) -> Settings:
        if not self.production:
            return self
        problems = []
        if DEMO_PROVIDER in self.identity_providers:
            problems.append("the demo identity provider is enabled (YIBAO_IDENTITY_PROVIDERS)")
        if self.graphiql:
            problems.append("GraphiQL is enabled (YIBAO_GRAPHIQL)")
        if self.introspection:
            problems.append("introspection is enabled (YIBAO_INTROSPECTION)")
        if not self.sync_audience:
            # Derived from each request's Host header, `aud` would bind a terminal's assertion to
            # whatever host the sender names: in production the server says what it is.
            problems.append("the /sync audience is not set (YIBAO_SYNC_AUDIENCE, e.g. https://host/sync)")
        if WECHAT_PROVIDER in self.identity_providers and not self.wechat_app_secret.get_secret_value():
            problems.append("the WeChat provider has no app secret (YIBAO_WECHAT_APP_SECRET)")
        if problems:
            raise ValueError("production mode refuses to start: " + "; ".join(problems))
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'yibao.db').resolve()}"

    @cached_property
    def resolved_key_dir(self) -> Path:
        return self.key_dir if self.key_dir is not None else self.data_dir / "keys"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")
