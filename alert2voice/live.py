"""The configuration in force: the config, the renderer that checked its templates, reloads that swap both."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from .config import Config
from .config_file import ConfigError, load_config, secrets_of
from .logs import SCRUBBER
from .metrics import Metrics
from .routing import PlanCache
from .speech import Speech
from .tls import ServerTLS

log = logging.getLogger("alert2voice.reload")


def make_speech(config: Config) -> Speech:
    """The SSML renderer the config describes: the one that checked its templates when there is one."""
    if isinstance(config._speech, Speech):
        return config._speech
    return Speech(config.templates.directory, max_alerts_spoken=config.speech.max_alerts_spoken,
                  max_chars=config.speech.max_chars)


def config_hash(config: Config) -> int:
    """The config's digest as the config_hash gauge shows it: its first 48 bits, exact in a float."""
    return int(config.digest[:12] or "0", 16)


class LiveConfig:
    """What a reload swaps, together: the config, its speech renderer, and the plans cached under it."""

    def __init__(self, config: Config, metrics: Metrics, path: Path | None = None) -> None:
        self.path = path
        self.metrics = metrics
        self.plans = PlanCache()
        self._lock = asyncio.Lock()
        # Told the new config after each successful reload.
        self.on_reload: list[Callable[[Config], None]] = []
        # HTTPS or not is decided at start (the socket listens one way); certificates follow every reload.
        self.tls = ServerTLS(config.server.tls.context) if config.server.tls else None
        self.apply(config)
        metrics.reload_ok.set(1)
        metrics.reload_time.set(time.time())

    def apply(self, config: Config) -> None:
        """Swap in a validated config (pending pages keep going on the new one)."""
        self.config = config
        self.speech = make_speech(config)
        self.plans.clear()  # entries of the old config would miss anyway; this frees them
        self._apply_tls(config)
        SCRUBBER.set_secrets(secrets_of(config))
        self.metrics.precreate([r.name for r in config.paging_routes])
        self.metrics.config_hash.set(config_hash(config))

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """What the listener serves HTTPS with (None: plain HTTP)."""
        return self.tls.listener if self.tls else None

    def _apply_tls(self, config: Config) -> None:
        """New connections handshake with the config's certificates; a switch to or from HTTPS waits for a restart."""
        if self.tls is not None and config.server.tls is not None:
            self.tls.use(config.server.tls.context)
        elif (self.tls is None) != (config.server.tls is None):
            log.warning("server.tls was added or removed: the listener stays "
                        f"{'HTTPS' if self.tls else 'plain HTTP'} until a restart")

    async def reload(self) -> None:
        """Re-read the config file and its secret files; on error the last good config stays."""
        if self.path is None:
            raise ConfigError([])
        async with self._lock:
            try:
                config = await asyncio.to_thread(load_config, self.path)
            except ConfigError as exc:
                self.metrics.reload_ok.set(0)
                log.error("config reload rejected; the last good config stays",
                          extra={"problems": [str(p) for p in exc.problems]})
                raise
            self.apply(config)
            for listener in self.on_reload:
                listener(config)
            self.metrics.reload_ok.set(1)
            self.metrics.reload_time.set(time.time())
            log.info("config reloaded", extra={"routes": len(config.routes), "config_hash": config.digest[:12]})
            for warning in config.warnings:
                log.warning(warning)
