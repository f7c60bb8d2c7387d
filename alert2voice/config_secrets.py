"""Secrets and files in the config: the base of every section, `<key>` / `<key>_file` secrets and token files read
relative to the config file, the credential sections, the TLS sections and their contexts, and the error that
names the key of a reference that does not resolve (never a secret's value)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationInfo, model_validator

from . import tls


class Section(BaseModel):
    """A section of the config: unknown keys refused, frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, arbitrary_types_allowed=True)


def read_secret_file(path: Path, info: ValidationInfo, key: str) -> SecretStr:
    """A secret file's text (without its final newline), or the ConfigReferenceError naming `key`."""
    full = config_path(path, info)
    try:
        text = full.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigReferenceError([((key,), f"cannot read secret file {str(full)!r}: {why}")]) from None
    return SecretStr(text.removesuffix("\n").removesuffix("\r"))


def resolve_secret(model: BaseModel, name: str, info: ValidationInfo, *, required: bool = False) -> None:
    """Resolve `name` / `name_file` into `name` (a SecretStr), refusing both at once."""
    inline, file = getattr(model, name), getattr(model, f"{name}_file")
    if inline is not None and file is not None:
        raise ConfigReferenceError([((f"{name}_file",), f"give either {name} or {name}_file, not both")])
    if file is not None:
        object.__setattr__(model, name, read_secret_file(file, info, f"{name}_file"))
    elif inline is None and required:
        raise ConfigReferenceError([((name,), f"{name} or {name}_file is required")])


class OneSecret(Section):
    """A section whose one required secret is given as `<holds>` or `<holds>_file`."""

    holds: ClassVar[str]  # the name of the field holding the secret

    @model_validator(mode="after")
    def _resolve_secret(self, info: ValidationInfo) -> OneSecret:
        resolve_secret(self, self.holds, info, required=True)
        return self


class BasicAuth(OneSecret):
    holds = "password"
    username: str
    password: SecretStr | None = None
    password_file: Path | None = None


def read_tokens_file(path: Path, info: ValidationInfo, key: str) -> list[SecretStr]:
    """The tokens of a file holding one a line ('#' comments and blank lines ignored); at least one."""
    text = read_secret_file(path, info, key).get_secret_value()
    lines = (t.strip() for t in text.splitlines())
    tokens = [SecretStr(t) for t in lines if t and not t.startswith("#")]
    if not tokens:
        raise ConfigReferenceError([((key,), f"{str(path)!r} holds no token")])
    return tokens


class WebhookAuth(Section):
    """Credentials a client must send: `webhook_auth` (Alertmanager) and `server.admin_auth` (operators)."""

    bearer_tokens: list[SecretStr] = Field(default_factory=list)
    bearer_tokens_file: Path | None = None
    basic_auth: BasicAuth | None = None

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> WebhookAuth:
        if self.bearer_tokens_file is not None:
            tokens = read_tokens_file(self.bearer_tokens_file, info, "bearer_tokens_file")
            object.__setattr__(self, "bearer_tokens", [*self.bearer_tokens, *tokens])
        if not self.bearer_tokens and self.basic_auth is None:
            raise ValueError("needs bearer_tokens, bearer_tokens_file or basic_auth (or omit the section)")
        return self


def config_path(path: Path, info: ValidationInfo) -> Path:
    """A path from the config file, relative ones resolved against the config file's directory."""
    base = (info.context or {}).get("base_dir")
    return path if path.is_absolute() or base is None else Path(base) / path


def tls_context(model: BaseModel, info: ValidationInfo, keys: tuple[str, ...],
                 build: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """Resolve the model's file keys against the config file's directory, then build its context, naming the key
    of a file that does not load (never its content)."""
    for key in keys:
        if getattr(model, key) is not None:
            object.__setattr__(model, key, config_path(getattr(model, key), info))
    try:
        return build()
    except tls.TLSFileError as exc:
        raise ConfigReferenceError([((exc.key,), str(exc))]) from None


class TLSConfig(Section):
    """HTTPS on the listener; with client_ca_file, client certificates verified if given (mutual TLS)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    min_version: Literal["TLS1.2", "TLS1.3"] = "TLS1.2"
    # The context built from these files when the config was validated: serving with it serves what was checked.
    _context: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load(self, info: ValidationInfo) -> TLSConfig:
        self._context = tls_context(self, info, ("cert_file", "key_file", "client_ca_file"), lambda: tls.build_context(
            self.cert_file, self.key_file, self.client_ca_file, min_version=self.min_version))
        return self

    @property
    def context(self) -> ssl.SSLContext:
        """The server context these files make."""
        return self._context

    @property
    def mutual(self) -> bool:
        """Whether client certificates are asked for (and, if given, verified)."""
        return self.client_ca_file is not None


class HeaderAuth(OneSecret):
    holds = "value"
    name: str
    value: SecretStr | None = None
    value_file: Path | None = None


class Authorization(OneSecret):
    """Alertmanager's http_config `authorization`: the header `Authorization: <type> <credentials>`."""

    holds = "credentials"
    type: str = Field(default="Bearer", pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    credentials: SecretStr | None = None
    credentials_file: Path | None = None


class ClientTLSConfig(Section):
    """Alertmanager's http_config `tls_config`, as a client: the CA to trust, a client certificate, or no check."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False
    _context: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load(self, info: ValidationInfo) -> ClientTLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        self._context = tls_context(self, info, ("ca_file", "cert_file", "key_file"), lambda: tls.client_context(
            self.ca_file, self.cert_file, self.key_file, insecure=self.insecure_skip_verify))
        return self

    @property
    def context(self) -> ssl.SSLContext:
        """The client context these files make (built when the config was validated)."""
        return self._context


class ConfigReferenceError(ValueError):
    """Cross-references that do not resolve, each with its key path."""

    def __init__(self, problems: list[tuple[tuple[Any, ...], str]]):
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, p))}: {m}" for p, m in problems))
