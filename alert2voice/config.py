"""The configuration as pydantic models: every section, its defaults, `*_file` secrets and validation.

Reading a file into them (YAML, `${ENV}` expansion, problems named by file, line and key) is config_file.py; the
scalar types (durations, E.164 numbers, time zones...) are config_types.py; secrets, credentials and TLS files,
config_secrets.py.
"""

from __future__ import annotations

import base64
import re
import ssl
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import Field, PrivateAttr, SecretStr, ValidationInfo, field_validator, model_validator

from . import oncall
from .auth import is_loopback
from .config_references import HEARTBEAT_ROUTE_PREFIX, reference_problems
from .config_secrets import (
    Authorization,
    BasicAuth,
    ClientTLSConfig,
    ConfigReferenceError,
    HeaderAuth,
    TLSConfig,
    WebhookAuth,
    read_tokens_file,
)
from .config_secrets import Section as _Model  # every model below is a section of the config
from .config_secrets import resolve_secret as _secret
from .config_types import (
    E164,
    ByteSize,
    Clock,
    Duration,
    HostName,
    HttpUrl,
    Key,
    Listen,
    LocalDateTime,
    Matchers,
    RateLimit,
    TimeZone,
    at_least,
    host_name,
)
from .units import Rate, parse_listen

# --------------------------------------------------------------------------------------------- server


class ServerConfig(_Model):
    listen: Listen = "0.0.0.0:9095"
    public_url: HttpUrl = "http://127.0.0.1:9095"
    max_body_bytes: ByteSize = 4 * 1024 * 1024
    read_timeout: Duration = timedelta(seconds=10)
    # A connection's limits, read at start: Go's ReadHeaderTimeout and IdleTimeout (Prometheus: 5 min idle).
    header_timeout: Duration = timedelta(seconds=10)
    idle_timeout: Duration = timedelta(seconds=75)
    max_connections: int = Field(default=4096, ge=16)
    shutdown_grace: Duration = timedelta(seconds=10)
    # Guards /-/reload, /-/render and /api/v1/pages; without it they answer loopback clients only.
    admin_auth: WebhookAuth | None = None
    # Host names the status page answers (besides public_url's): a page served under any other name is a DNS
    # rebinding attempt (a browser on evil.example reading it through `kubectl port-forward`). "*": any.
    allowed_hosts: list[HostName] = Field(default_factory=lambda: ["localhost", "127.0.0.1", "[::1]"])
    tls: TLSConfig | None = None

    def host_allowed(self, host: str | None) -> bool:
        """Whether a request's Host header names this service: public_url's host or one of allowed_hosts."""
        if "*" in self.allowed_hosts:
            return True
        name = host_name(host or "")
        return bool(name) and (name in self.allowed_hosts or name == host_name(urlsplit(self.public_url).netloc))

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_listen(self.listen)


# ------------------------------------------------------------------------------------------- provider

class CallbackConfig(_Model):
    auth_id: str | None = None
    bearer_token: SecretStr | None = None
    bearer_token_file: Path | None = None
    bearer_tokens: list[SecretStr] = Field(default_factory=list)   # several at once, for rotation
    bearer_tokens_file: Path | None = None
    header: HeaderAuth | None = None
    hub_secret: SecretStr | None = None
    hub_secret_file: Path | None = None
    allow_unauthenticated: bool = False
    deadline: Duration = timedelta(minutes=2)

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> CallbackConfig:
        _secret(self, "bearer_token", info)
        _secret(self, "hub_secret", info)
        if self.bearer_tokens_file is not None:
            tokens = read_tokens_file(self.bearer_tokens_file, info, "bearer_tokens_file")
            object.__setattr__(self, "bearer_tokens", [*self.bearer_tokens, *tokens])
        return self

    @property
    def tokens(self) -> list[SecretStr]:
        """Every accepted bearer token: bearer_token(_file) and bearer_tokens(_file) together."""
        return [*([self.bearer_token] if self.bearer_token is not None else []), *self.bearer_tokens]

    @property
    def authenticated(self) -> bool:
        return bool(self.tokens) or self.header is not None or self.hub_secret is not None


class RetryConfig(_Model):
    initial: Duration = timedelta(seconds=1)
    max: Duration = timedelta(minutes=1)
    give_up_after: Duration = timedelta(minutes=15)

    @model_validator(mode="after")
    def _order(self) -> RetryConfig:
        if self.initial <= timedelta(0) or self.max < self.initial:
            raise ValueError("retry needs 0 < initial <= max")
        return self


class ProviderConfig(_Model):
    type: Literal["webex"] = "webex"
    region: Literal["us", "us1", "eu", "uk", "ca", "in", "au"] = "us"
    base_url: HttpUrl | None = None
    service_key: SecretStr | None = None
    service_key_file: Path | None = None
    caller_id: E164
    mode: Literal["message", "interactive"] = "message"
    callback: CallbackConfig = Field(default_factory=CallbackConfig)
    timeout: Duration = timedelta(seconds=10)
    max_in_flight: int = Field(default=8, ge=1, le=1000)
    rate_limit: RateLimit = Rate(10, timedelta(seconds=1))
    retry: RetryConfig = Field(default_factory=RetryConfig)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        if v is not None and v.lower().startswith("http://") and not is_loopback(urlsplit(v).hostname):
            # Every request carries the service key: over plain HTTP anyone on the path could read it.
            raise ValueError(f"{v!r}: plain http:// only to localhost, 127.0.0.0/8 or ::1; use https://")
        return v

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> ProviderConfig:
        problems: list[tuple[tuple[Any, ...], str]] = []
        try:
            _secret(self, "service_key", info, required=True)
        except ConfigReferenceError as exc:
            problems += exc.problems
        if not self.callback.authenticated and not self.callback.allow_unauthenticated:
            problems.append((("callback",), "no callback credential, so anyone who can reach /callbacks/webex could"
                             " end escalations: set bearer_token, bearer_tokens(_file), header or hub_secret (what"
                             " the tenant adds for callbackUrlAuthId), or allow_unauthenticated: true"))
        if problems:
            raise ConfigReferenceError(problems)
        return self

    @property
    def url(self) -> str:
        """The API origin: base_url (simulator, sandbox, legacy imiconnect host), else the region's."""
        if self.base_url:
            # The docs give the base as ".../v1/voice"; requests add that path, so it is not doubled.
            return self.base_url.removesuffix("/v1/voice")
        return f"https://api.{self.region}.webexconnect.io"


# --------------------------------------------------------------------------------------------- speech


class VoiceSettings(_Model):
    """TTS audio settings a contact may override."""

    language: str | None = None
    voice: str | None = None
    gender: Literal["MALE", "FEMALE"] | None = None


class SpeechConfig(_Model):
    language: str = "en-US"
    voice: str = "AriaNeural"
    gender: Literal["MALE", "FEMALE"] = "FEMALE"
    max_alerts_spoken: int = Field(default=3, ge=1, le=50)
    # The built-in firing template needs 350-750 characters for one alert; below 800 it cannot fit.
    max_chars: int = Field(default=2000, ge=800, le=6000)

    def for_contact(self, override: VoiceSettings | None) -> SpeechConfig:
        """These settings with a contact's language, voice and gender applied."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))


class TemplatesConfig(_Model):
    directory: Path | None = None
    firing: str = "firing.ssml.j2"
    resolved: str = "resolved.ssml.j2"

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> TemplatesConfig:
        base = (info.context or {}).get("base_dir")
        if self.directory is not None and base is not None and not self.directory.is_absolute():
            object.__setattr__(self, "directory", Path(base) / self.directory)
        if self.directory is not None and not self.directory.is_dir():
            raise ConfigReferenceError([(("directory",), f"{str(self.directory)!r} is not a directory")])
        return self


class AudioConfig(_Model):
    type: Literal["URL", "MEDIA"]
    location: str | None = None
    mediaId: str | None = None

    @model_validator(mode="after")
    def _fields(self) -> AudioConfig:
        if self.type == "URL" and not (self.location and re.match(r"^https?://", self.location)):
            raise ValueError("audio of type URL needs location: an http(s) URL of a .wav or .mp3 file")
        if self.type == "MEDIA" and not self.mediaId:
            raise ValueError("audio of type MEDIA needs mediaId")
        return self


# ---------------------------------------------------------------------------------------------- store


class StoreConfig(_Model):
    backend: Literal["sqlite", "redis", "memory"] = "sqlite"
    path: Path = Path("./alert2voice.db")
    url: SecretStr | None = None
    url_file: Path | None = None
    key_prefix: str = Field(default="a2v:", min_length=1, max_length=64)
    # Redis replicas that must have what a webhook's 200 promises (Redis WAIT) before it is sent, and how long
    # /alerts waits for them before answering 503. 0: answered once the master has it (replication is async).
    replicas_ack: int = Field(default=0, ge=0)
    replicas_ack_timeout: Duration = timedelta(seconds=1)

    @field_validator("replicas_ack_timeout")
    @classmethod
    def _replicas_ack_timeout(cls, v: timedelta) -> timedelta:
        if not timedelta(milliseconds=10) <= v <= timedelta(seconds=10):
            raise ValueError("must be between 10ms and 10s: the webhook waits for it")
        return v

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> StoreConfig:
        _secret(self, "url", info, required=self.backend == "redis")
        if self.replicas_ack and self.backend != "redis":
            raise ValueError(f"store.replicas_ack is for backend redis; backend {self.backend} has no replicas")
        if self.url is not None:
            if self.backend != "redis":
                raise ValueError(f"store.url is for backend redis; backend {self.backend} does not use it")
            from .store.redis_url import check_url  # here: the store package imports this module

            check_url(self.url.get_secret_value())
        base = (info.context or {}).get("base_dir")
        if base is not None and not self.path.is_absolute():
            object.__setattr__(self, "path", Path(base) / self.path)
        return self


class DedupConfig(_Model):
    window: Duration = timedelta(hours=4)
    ignore_labels: list[str] = Field(default_factory=lambda: ["replica", "prometheus_replica"])


# ------------------------------------------------------------------------------ contacts and rotations


class QuietHoursConfig(_Model):
    from_: Clock = Field(alias="from")
    to: Clock
    unless_severity: list[str] = Field(default_factory=list)


class ContactConfig(_Model):
    number: E164
    timezone: TimeZone = ZoneInfo("UTC")
    quiet_hours: QuietHoursConfig | None = None
    speech: VoiceSettings | None = None

    def quiet(self) -> oncall.QuietHours | None:
        """The contact's quiet hours in their own timezone, if any."""
        q = self.quiet_hours
        if q is None:
            return None
        return oncall.QuietHours(q.from_, q.to, self.timezone, frozenset(q.unless_severity))


class OverrideConfig(_Model):
    contact: str
    from_: LocalDateTime = Field(alias="from")
    to: LocalDateTime

    @model_validator(mode="after")
    def _order(self) -> OverrideConfig:
        if self.to <= self.from_:
            raise ValueError("override 'to' must be after 'from'")
        return self


class RotationConfig(_Model):
    members: list[str] = Field(min_length=1)
    shift: Duration
    start: LocalDateTime
    timezone: TimeZone = ZoneInfo("UTC")
    overrides: list[OverrideConfig] = Field(default_factory=list)

    _shift = field_validator("shift")(lambda v: at_least(v, timedelta(minutes=1), "shift"))

    def rotation(self, name: str) -> oncall.Rotation:
        """This rotation as the on-call calculator's value object."""

        def local(dt: datetime) -> datetime:
            # An explicit offset in the YAML is honoured, then expressed in the rotation's wall clock.
            return dt.astimezone(self.timezone).replace(tzinfo=None) if dt.tzinfo else dt

        return oncall.Rotation(
            name=name,
            members=tuple(self.members),
            shift=self.shift,
            start=local(self.start),
            tz=self.timezone,
            overrides=tuple(oncall.Override(o.contact, local(o.from_), local(o.to)) for o in self.overrides),
        )


# --------------------------------------------------------------------------------------------- routes


class EscalationStep(_Model):
    call: str
    attempts: int = Field(default=1, ge=1, le=20)
    interval: Duration = timedelta(minutes=5)

    @property
    def rotation(self) -> str | None:
        return self.call.removeprefix("rotation:") if self.call.startswith("rotation:") else None


class RouteConfig(_Model):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    matchers: Matchers = Field(default_factory=list)
    continue_: bool = Field(default=False, alias="continue")
    escalation: list[EscalationStep] = Field(default_factory=list)
    repeat: int = Field(default=0, ge=0, le=20)
    send_resolved: bool = False
    # An acknowledged page whose alerts still fire this long after is re-opened from its first step (off: None).
    ack_timeout: Duration | None = None
    template: str | None = None
    resolved_template: str | None = None
    audio: AudioConfig | None = None
    text_format: Literal["SSML", "TEXT"] | None = None

    def template_for(self, templates: TemplatesConfig, kind: str) -> str:
        """The template a firing or resolved call of this route renders; TEXT routes get the `.txt.j2` twin."""
        resolved = kind == "resolved"
        name = (self.resolved_template or templates.resolved) if resolved else (self.template or templates.firing)
        if self.text_format == "TEXT" and name.endswith(".ssml.j2"):
            return name.removesuffix(".ssml.j2") + ".txt.j2"
        return name


# ----------------------------------------------------------------------------------------- heartbeats

# A heartbeat's pages belong to the route of this name (route names allow ':', heartbeat names do not).


class HeartbeatConfig(_Model):
    """A dead-man's switch: matching firing alerts (or POST /heartbeats/{name}) refresh it; silence pages."""

    # It is a URL path segment (POST /heartbeats/{name}) and, prefixed, a route name.
    name: str = Field(min_length=1, max_length=90, pattern=r"^[A-Za-z0-9_.-]+$")
    matchers: Matchers = Field(default_factory=list)
    timeout: Duration
    escalation: list[EscalationStep] = Field(min_length=1)
    repeat: int = Field(default=0, ge=0, le=20)
    send_resolved: bool = False
    _route: RouteConfig | None = PrivateAttr(default=None)

    _timeout = field_validator("timeout")(lambda v: at_least(v, timedelta(seconds=1), "timeout"))

    @property
    def route(self) -> RouteConfig:
        """The route its pages escalate on, named `heartbeat:<name>` (route_of, metrics and the API see it)."""
        if self._route is None:
            self._route = RouteConfig(name=HEARTBEAT_ROUTE_PREFIX + self.name, escalation=self.escalation,
                                      repeat=self.repeat, send_resolved=self.send_resolved)
        return self._route


# ------------------------------------------------------------------------ throttle and acknowledgement


class ThrottleRule(_Model):
    calls: int = Field(ge=1)
    per: Duration


class StormRule(_Model):
    pages: int = Field(ge=1)
    per: Duration


class ThrottleConfig(_Model):
    per_number: list[ThrottleRule] = Field(
        default_factory=lambda: [ThrottleRule(calls=3, per=timedelta(minutes=15)),
                                 ThrottleRule(calls=7, per=timedelta(hours=1))])
    global_: ThrottleRule | None = Field(default=None, alias="global")
    storm: StormRule | None = None
    # How long a per-number or global tier may hold a call before it gives way (pages.held_too_long): a page
    # call is recorded throttled and the page moves on to its next person; a "resolved" call is dropped.
    max_hold: Duration = timedelta(minutes=1)


class SilenceConfig(_Model):
    alertmanager_url: str | None = None  # None: the first of alertmanager.urls (Config._silence_url)
    duration: Duration = timedelta(hours=2)


class AcknowledgementConfig(_Model):
    """The keys of the phone menu in interactive mode, and the silence every acknowledgement creates."""

    digit: Key = "1"
    escalate_digit: Key | None = "5"  # pass the page to its next step now; null: no such key
    repeat_digit: Key | None = "*"    # hear the message and the menu again; null: no such key
    silence: SilenceConfig | None = None

    @model_validator(mode="after")
    def _distinct_keys(self) -> AcknowledgementConfig:
        keys = [k for k in (self.digit, self.escalate_digit, self.repeat_digit) if k is not None]
        if len(set(keys)) != len(keys):
            raise ValueError(f"digit, escalate_digit and repeat_digit must be different keys (got {', '.join(keys)})")
        return self


# --------------------------------------------------------------------------------------- alertmanager


class AlertmanagerConfig(_Model):
    """Alertmanager's API v2, asked before each call whether a page's alerts are silenced or inhibited."""

    urls: list[HttpUrl] = Field(min_length=1)   # an HA pair's peers, asked in order until one answers
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    tls_config: ClientTLSConfig | None = None
    timeout: Duration = timedelta(seconds=2)     # per request: a slow Alertmanager never holds a call back long
    cache_ttl: Duration = timedelta(seconds=5)   # an answer about an alert is reused this long (a storm asks once)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: timedelta) -> timedelta:
        # A call waits for the answer, its page held meanwhile (its lease renewed only before the provider request).
        if not timedelta(milliseconds=100) <= v <= timedelta(seconds=10):
            raise ValueError("must be between 100ms and 10s: a call waits for the answer")
        return v

    @model_validator(mode="after")
    def _one_auth(self) -> AlertmanagerConfig:
        if self.basic_auth is not None and self.authorization is not None:
            raise ValueError("give either basic_auth or authorization, not both")
        return self

    def headers(self) -> dict[str, str]:
        """The Authorization header every request to Alertmanager carries (none without credentials)."""
        if self.authorization is not None and self.authorization.credentials is not None:
            return {"Authorization": f"{self.authorization.type} {self.authorization.credentials.get_secret_value()}"}
        if self.basic_auth is not None and self.basic_auth.password is not None:
            pair = f"{self.basic_auth.username}:{self.basic_auth.password.get_secret_value()}"
            return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
        return {}

    @property
    def ssl_context(self) -> ssl.SSLContext | bool:
        """What aiohttp's `ssl=` takes for https URLs: tls_config's context, else True (the system's CAs)."""
        return self.tls_config.context if self.tls_config is not None else True


# ----------------------------------------------------------------------------------------------- root


class Config(_Model):
    server: ServerConfig = Field(default_factory=ServerConfig)
    webhook_auth: WebhookAuth | None = None
    provider: ProviderConfig
    speech: SpeechConfig = Field(default_factory=SpeechConfig)
    templates: TemplatesConfig = Field(default_factory=TemplatesConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    contacts: dict[str, ContactConfig] = Field(default_factory=dict)
    rotations: dict[str, RotationConfig] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)
    throttle: ThrottleConfig = Field(default_factory=ThrottleConfig)
    acknowledgement: AcknowledgementConfig = Field(default_factory=AcknowledgementConfig)
    heartbeats: list[HeartbeatConfig] = Field(default_factory=list)
    alertmanager: AlertmanagerConfig | None = None
    # The renderer that checked this config's templates (parse_config): serving with it speaks exactly
    # what was checked, and the first call does not compile them again.
    _speech: Any = PrivateAttr(default=None)
    # SHA-256 of the config file's text: replicas loaded from the same file show the same (config_hash metric).
    _digest: str = PrivateAttr(default="")

    @property
    def digest(self) -> str:
        """The SHA-256 (hex) of the text this config was parsed from."""
        return self._digest

    @model_validator(mode="after")
    def _references(self) -> Config:
        """Names that must exist (contacts, rotations), names that must be unique, defaults filled from others."""
        problems = reference_problems(self)
        if problems:
            raise ConfigReferenceError(problems)
        return self

    @property
    def paging_routes(self) -> list[RouteConfig]:
        """Every route a page can be on: the configured routes, then each heartbeat's."""
        return [*self.routes, *(hb.route for hb in self.heartbeats)]

    def route(self, name: str) -> RouteConfig | None:
        """The route (or heartbeat's route) of this name."""
        return next((r for r in self.paging_routes if r.name == name), None)

    def heartbeat(self, name: str) -> HeartbeatConfig | None:
        """The heartbeat of this name."""
        return next((hb for hb in self.heartbeats if hb.name == name), None)

    def rotation(self, name: str) -> oncall.Rotation:
        """The named rotation as the on-call calculator's value object."""
        return self.rotations[name].rotation(name)

    @property
    def warnings(self) -> list[str]:
        """What a valid config leaves open, said at every start (serve logs it, check-config prints it)."""
        return self.warnings_listening_on(self.server.host_port[0])

    def warnings_listening_on(self, host: str) -> list[str]:
        """The warnings, for a listener on `host` (serve --listen may differ from server.listen)."""
        out = []
        if self.webhook_auth is None and not (self.server.tls and self.server.tls.mutual):
            out.append("webhook_auth is not set: anyone who can reach /alerts can make phones ring")
        if not self.provider.callback.authenticated:
            out.append("provider.callback.allow_unauthenticated is true: anyone who can reach /callbacks/webex"
                       " can end escalations and acknowledge pages")
        if self.server.admin_auth is None and not is_loopback(host):
            out.append(f"server.admin_auth is not set while listening on {host}: the admin endpoints"
                       " trust loopback clients alone, and behind a mesh sidecar (Istio, Linkerd) every client is"
                       " loopback; set server.admin_auth")
        if not any(route.escalation for route in self.routes):
            out.append("no route calls anyone (routes is empty, or no route has an escalation): every alert is "
                       "answered 200 and nobody is called")
        return out
