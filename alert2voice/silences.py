"""Alertmanager silences for acknowledged pages (POST /api/v2/silences), created in the background."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
from prometheus_client import Counter
from yarl import URL

from .config import AlertmanagerConfig, SilenceConfig
from .pages import Page

log = logging.getLogger(__name__)

ATTEMPTS = 3
RETRY_WAIT = 2.0  # seconds, doubled after each failed attempt
REQUEST_TIMEOUT = 5.0


def matchers(labels: Mapping[str, str], ignore: Collection[str]) -> list[dict[str, Any]]:
    """Equality matchers on an alert's labels, sorted, without the labels that do not identify it."""
    return [{"name": k, "value": v, "isRegex": False, "isEqual": True}
            for k, v in sorted(labels.items()) if k not in ignore]


def silences_for(pages: Sequence[Page], contact: str, now: datetime, config: SilenceConfig,
                 ignore: Collection[str], *, how: str = "by phone", note: str | None = None) -> list[dict[str, Any]]:
    """One silence per distinct alert of the pages, matching all its identifying labels."""
    # Common labels would also silence the group's other alerts, so each alert gets its own full set of
    # equality matchers; `dedup.ignore_labels` are left out (as in page keys): every HA replica's copy is silenced.
    out: dict[str, dict[str, Any]] = {}
    for page in pages:
        for alert in page.alerts:
            ms = matchers(alert.get("labels", {}), ignore)
            key = repr(ms)
            if not ms or key in out:
                continue  # no matcher would silence every alert: Alertmanager refuses that anyway
            out[key] = {"matchers": ms, "startsAt": _stamp(now), "endsAt": _stamp(now + config.duration),
                        "createdBy": "alert2voice",
                        "comment": f"Acknowledged by {contact} {how} (page {page.key[:12]})"
                                   + (f": {note}" if note else "")}
    return list(out.values())


def _silence_id(text: str) -> str | None:
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("silenceID"), str):
            return data["silenceID"]
    return None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Silencer:
    """Creates silences in background tasks over the app's one session; failures are logged, retried briefly."""

    def __init__(self, session: aiohttp.ClientSession, requests: Counter,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.session = session
        self.requests = requests  # alert2voice_silence_requests_total{result}: one count per silence
        self.sleep = sleep
        self._tasks: set[asyncio.Task[None]] = set()

    def create(self, config: SilenceConfig, silences: Sequence[dict[str, Any]], page_key: str,
               client: AlertmanagerConfig | None = None) -> None:
        """Start creating the silences; returns at once. With `client` (the alertmanager section) and a silence URL
        among its urls, its credentials and TLS settings go with each request (never to another host)."""
        base = (config.alertmanager_url or "").rstrip("/")
        if client is None or base not in client.urls:
            client = None
        for body in silences:
            self._spawn(self._create(base + "/api/v2/silences", body, page_key, client))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="silence")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _create(self, url: str, body: dict[str, Any], page_key: str, client: AlertmanagerConfig | None) -> None:
        fields = {"page_key": page_key, "alertmanager": str(URL(url).with_user(None)),
                  "matchers": len(body["matchers"])}
        wait = RETRY_WAIT
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self.session.post(url, json=body, allow_redirects=False,
                                             headers=client.headers() if client is not None else None,
                                             ssl=client.ssl_context if client is not None else True,
                                             timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as resp:
                    text = await resp.text(errors="replace")
            except (aiohttp.ClientError, TimeoutError) as exc:
                error, retry = f"{type(exc).__name__}: {exc}", True
            else:
                if resp.status == 200:
                    self.requests.labels("created").inc()
                    log.info("silence created", extra={**fields, "silence_id": _silence_id(text)})
                    return
                error, retry = f"HTTP {resp.status}: {' '.join(text.split())[:200]}", resp.status >= 500
            if not retry or attempt == ATTEMPTS:
                self.requests.labels("failed").inc()
                log.error("silence not created", extra={**fields, "error": error, "attempts": attempt})
                return
            await self.sleep(wait)
            wait *= 2

    async def idle(self) -> None:
        """Wait until every pending silence request has ended (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, grace: float) -> None:
        """Give pending requests `grace` seconds, then cancel them."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle(), grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
