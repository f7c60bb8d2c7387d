"""The configuration in force: the config, the renderer that checked its templates, reloads that swap both."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from .config import Config, ConfigError, load_config, secrets_of
from .logs import SCRUBBER
from .metrics import Metrics
from .routing import PlanCache
from .speech import Speech

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
        self.apply(config)
        metrics.reload_ok.set(1)
        metrics.reload_time.set(time.time())

    def apply(self, config: Config) -> None:
        """Swap in a validated config (pending pages keep going on the new one)."""
        self.config = config
        self.speech = make_speech(config)
        self.plans.clear()  # entries of the old config would miss anyway; this frees them
        SCRUBBER.set_secrets(secrets_of(config))
        self.metrics.precreate([r.name for r in config.paging_routes])
        self.metrics.config_hash.set(config_hash(config))

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
            self.metrics.reload_ok.set(1)
            self.metrics.reload_time.set(time.time())
            log.info("config reloaded", extra={"routes": len(config.routes), "config_hash": config.digest[:12]})
            for warning in config.warnings:
                log.warning(warning)
