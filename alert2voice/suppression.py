"""Whether Alertmanager still holds a page's alerts active, or silences or inhibits them (GET /api/v2/alerts).

Alertmanager sends a receiver nothing when an alert becomes silenced or inhibited, so alert2voice asks before
each call. The answer about one alert (its label set) is shared for `alertmanager.cache_ttl`, in-flight requests
included, so that a storm of pages asks about each alert once. Whatever goes wrong (Alertmanager down, slow, or
answering nonsense) leaves the call to go ahead: a page is never lost to a monitoring outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
from yarl import URL

from .config import AlertmanagerConfig
from .logs import Repeated

log = logging.getLogger(__name__)

# A cache this large is swept of expired answers before it grows further (a storm's alerts, many times over).
SWEEP_AT = 10_000


class Verdict(StrEnum):
    """A check's result, as alert2voice_alertmanager_checks_total{result} counts it."""

    SILENCED = "silenced"        # every firing alert of the page is silenced or inhibited: nobody is called
    ACTIVE = "active"            # none is: the call goes ahead
    PARTLY = "partly"            # some are, not all: the call goes ahead
    UNREACHABLE = "unreachable"  # no Alertmanager answered in time: the call goes ahead
    ERROR = "error"              # one answered, but not with a list of alerts: the call goes ahead


VERDICTS = tuple(v.value for v in Verdict)


@dataclass(frozen=True)
class Checked:
    """A check's verdict, and for each alert asked about (in order) whether Alertmanager suppresses it."""

    verdict: Verdict
    suppressed: tuple[bool, ...] = ()

    def active(self, alerts: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The alerts not suppressed (all of them when the answer is not known)."""
        if len(self.suppressed) != len(alerts):
            return list(alerts)
        return [a for a, held in zip(alerts, self.suppressed, strict=True) if not held]


class _Failed(Exception):
    """No Alertmanager gave a usable answer; `verdict` says whether none answered or one answered wrong."""

    def __init__(self, verdict: Verdict, why: str) -> None:
        super().__init__(why)
        self.verdict = verdict


def _filter(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """The query selecting exactly these labels' alerts: one equality matcher per label (Alertmanager's syntax)."""
    def quoted(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return [("filter", f"{k}={quoted(v)}") for k, v in sorted(labels.items())]


def suppressed(answer: Any, labels: Mapping[str, str]) -> bool | None:
    """From GET /api/v2/alerts' answer: whether the alert with exactly these labels is silenced or inhibited
    (status.state "suppressed"); None when Alertmanager does not hold it (resolved, or never sent to this peer).
    ValueError when the answer is not a list of alerts."""
    if not isinstance(answer, list):
        raise ValueError("not a list of alerts")
    for item in answer:
        if not isinstance(item, dict) or not isinstance(item.get("status"), dict):
            raise ValueError("an alert without a status")
        if item.get("labels") == dict(labels):
            status = item["status"]
            # "suppressed" is Alertmanager's word for both; silencedBy and inhibitedBy say by what.
            return status.get("state") == "suppressed" or bool(status.get("silencedBy") or status.get("inhibitedBy"))
    return None


class Suppression:
    """Asks Alertmanager (its peers in order) about alerts, over the app's one session, sharing answers briefly."""

    def __init__(self, session: aiohttp.ClientSession, config: Callable[[], AlertmanagerConfig | None],
                 monotonic: Callable[[], float]) -> None:
        self.session, self.config, self.monotonic = session, config, monotonic
        # label set -> (when the answer expires, or None while it is asked; the answer being asked or given)
        self._answers: dict[frozenset[tuple[str, str]], tuple[float | None, asyncio.Future[bool | None]]] = {}
        self._failing: dict[str, Repeated] = {}  # per peer: logged when its error changes, not once per alert

    def _peer(self, where: str) -> Repeated:
        peer = self._failing.get(where)
        if peer is None:
            peer = self._failing[where] = Repeated(
                log, "Alertmanager not asked successfully; the next peer, else the call goes ahead",
                monotonic=self.monotonic)
        return peer

    async def check(self, alerts: Sequence[Mapping[str, Any]]) -> Checked | None:
        """The verdict on these alerts (a page's firing ones); None when no Alertmanager is configured."""
        cfg = self.config()
        if cfg is None or not alerts:
            return None
        answers = await asyncio.gather(*(self._answer(cfg, a.get("labels", {})) for a in alerts),
                                       return_exceptions=True)
        failed = [a for a in answers if isinstance(a, BaseException)]
        if failed:
            first = failed[0]
            if not isinstance(first, _Failed):
                raise first
            return Checked(first.verdict)
        # None: Alertmanager does not hold the alert (resolved there, or never sent to it): it counts as active.
        held = tuple(a is True for a in answers)
        verdict = Verdict.SILENCED if all(held) else Verdict.PARTLY if any(held) else Verdict.ACTIVE
        return Checked(verdict, held)

    async def _answer(self, cfg: AlertmanagerConfig, labels: Mapping[str, str]) -> bool | None:
        key = frozenset(labels.items())
        now = self.monotonic()
        cached = self._answers.get(key)
        if cached is not None and (cached[0] is None or cached[0] > now):
            return await asyncio.shield(cached[1])
        if len(self._answers) >= SWEEP_AT:
            self._answers = {k: v for k, v in self._answers.items() if v[0] is None or v[0] > now}
        future: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._answers[key] = (None, future)
        try:
            future.set_result(await self._ask(cfg, labels))
        except _Failed as exc:
            future.set_exception(exc)
        except BaseException as exc:  # cancelled, or a bug: nobody waits on a future that never ends
            self._answers.pop(key, None)
            future.set_exception(_Failed(Verdict.ERROR, repr(exc)))
            future.exception()  # retrieved: nobody else may be waiting for it
            raise
        # Failures are shared too: a storm during an outage waits for the timeout once, not once per page.
        self._answers[key] = (self.monotonic() + cfg.cache_ttl.total_seconds(), future)
        return await asyncio.shield(future)

    async def _ask(self, cfg: AlertmanagerConfig, labels: Mapping[str, str]) -> bool | None:
        """Ask each peer in turn until one answers; _Failed when none did."""
        failure = _Failed(Verdict.UNREACHABLE, "no Alertmanager URL")
        for base in cfg.urls:
            url = URL(base + "/api/v2/alerts").with_query(_filter(labels))
            where = str(URL(base).with_user(None))
            try:
                async with self.session.get(url, headers=cfg.headers(), ssl=cfg.ssl_context,
                                            allow_redirects=False,
                                            timeout=aiohttp.ClientTimeout(total=cfg.timeout.total_seconds())) as resp:
                    if resp.status != 200:
                        text = await resp.text(errors="replace")
                        raise _Failed(Verdict.ERROR, f"HTTP {resp.status}: {' '.join(text.split())[:200]}")
                    answer = suppressed(await resp.json(content_type=None), labels)
                self._peer(where).over()
                return answer
            except _Failed as exc:
                failure = exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = _Failed(Verdict.UNREACHABLE, f"{type(exc).__name__}: {exc}")
            except ValueError as exc:  # not JSON, or not Alertmanager's shape
                failure = _Failed(Verdict.ERROR, f"unexpected answer: {exc}")
            self._peer(where)(str(failure), alertmanager=where, result=failure.verdict.value)
        raise failure
