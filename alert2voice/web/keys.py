"""Typed application keys: each piece of app state under its own key, set once by create_app or a cleanup context."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..admission import Admission
from ..dispatch import Dispatcher
from ..dispatch.outcomes import Outcomes
from ..dispatch.speaking import Speaker
from ..dispatch.work import Work
from ..heartbeats import Heartbeats
from ..live import LiveConfig
from ..logs import Refusals
from ..metrics import Metrics
from ..preview import Previews
from ..provider import Provider
from ..provider.health import ProviderHealth
from ..silences import Silencer
from ..store import Store
from ..store.clock import StoreClock
from ..supervisor import Supervisor
from ..suppression import Suppression

LIVE: web.AppKey[LiveConfig] = web.AppKey("live", LiveConfig)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
# The store's clock (store/clock.py): every time replicas write and compare is read from it.
CLOCK: web.AppKey[StoreClock] = web.AppKey("clock", StoreClock)
STORE: web.AppKey[Store] = web.AppKey("store")
# Set while SIGTERM drains: new webhooks get 503 (Alertmanager retries), /-/ready turns false.
SHUTDOWN: web.AppKey[asyncio.Event] = web.AppKey("shutdown", asyncio.Event)
# Given to create_app (tests) or made by the provider context from the config.
PROVIDER: web.AppKey[Provider] = web.AppKey("provider")
# What probes and calls found of the provider; made by create_app (a test may swap its `sleep` before start).
HEALTH: web.AppKey[ProviderHealth] = web.AppKey("health", ProviderHealth)
# The status page's WAV previews: cached, two espeak-ng at a time, each within 10 s.
PREVIEWS: web.AppKey[Previews] = web.AppKey("previews", Previews)
# Refused requests anyone can send (a callback's wrong credentials, a foreign Host): a line a minute per kind.
REFUSALS: web.AppKey[Refusals] = web.AppKey("refusals", Refusals)
# Made at startup by the cleanup contexts.
SILENCER: web.AppKey[Silencer] = web.AppKey("silencer", Silencer)
SUPPRESSION: web.AppKey[Suppression] = web.AppKey("suppression", Suppression)
DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher", Dispatcher)
# What the handlers use of the dispatcher's rooms, set beside it: the provider's receipts and call events applied
# to their calls (POST /callbacks/webex), what a call said (the status page), and the one way a page changes
# (a person's ack or escalate), under the same page locks as the dispatcher's.
OUTCOMES: web.AppKey[Outcomes] = web.AppKey("outcomes", Outcomes)
SPEAKER: web.AppKey[Speaker] = web.AppKey("speaker", Speaker)
WORK: web.AppKey[Work] = web.AppKey("work", Work)
ADMISSION: web.AppKey[Admission] = web.AppKey("admission", Admission)
SUPERVISOR: web.AppKey[Supervisor] = web.AppKey("supervisor", Supervisor)
DISPATCHER_TASK: web.AppKey[asyncio.Task[None]] = web.AppKey("dispatcher_task")
HEARTBEATS: web.AppKey[Heartbeats] = web.AppKey("heartbeats", Heartbeats)
