"""Every Prometheus metric alert2voice exports (SPEC §6), built on an injected registry."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from . import __version__
from .pages import CALL_OUTCOMES  # every final call state: a new one is pre-created with the others
from .suppression import VERDICTS

ACK_VIAS = ("api", "web", "phone")
PAGE_RESULTS = ("called", "duplicate", "no_route", "quiet_hours", "throttled", "no_contacts")
SILENCE_RESULTS = ("created", "failed")
# What the provider's health probe (provider/health.py) last found: ok, the key refused, no connection, an error.
PROVIDER_STATUSES = ("ok", "auth", "unreachable", "error")
WEBHOOK_RESULTS = ("accepted", "bad_request", "unauthorized", "too_large", "unsupported_media_type",
                   "unavailable")


class _Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount


class HotCounter(Collector):
    """A labelled counter for the webhook path, counted on the event loop's thread without a lock.

    prometheus_client's children take a lock on every inc(); the webhook path counts four or five
    things per request, all from the one event-loop thread, so plain numbers do, exported at scrape
    time like any Counter (`<name>_total`, same help and labels).
    """

    def __init__(self, name: str, documentation: str, labelnames: list[str], registry: CollectorRegistry):
        self.name, self.documentation, self.labelnames = name.removesuffix("_total"), documentation, labelnames
        self._children: dict[tuple[str, ...], _Count] = {}
        registry.register(self)

    def labels(self, *values: str) -> _Count:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Count()
        return child

    def collect(self):
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value)
        yield family

    def describe(self):
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)


class ReadCounter(Collector):
    """A counter something else keeps (a plain int on another thread), read at scrape time: `read` is set by the
    wiring (create_app), 0 until then."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry):
        self.name, self.documentation = name.removesuffix("_total"), documentation
        self.read: Callable[[], float] = lambda: 0.0
        registry.register(self)

    def collect(self):
        family = CounterMetricFamily(self.name, self.documentation)
        family.add_metric([], self.read())
        yield family

    def describe(self):
        yield CounterMetricFamily(self.name, self.documentation)


class Metrics:
    """The metric families, registered on one registry (tests get a fresh one each)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        # `_created` series double every counter's output and no dashboard here uses them.
        disable_created_metrics()
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = "alert2voice_"
        # The three counters every webhook touches are HotCounters; the rest are prometheus_client's.
        self.webhooks = HotCounter(p + "webhooks_total", "Webhook requests on /alerts by result.", ["result"], r)
        self.alerts_received = HotCounter(p + "alerts_received_total", "Alerts received, by alert status.",
                                          ["status"], r)
        self.pages = HotCounter(p + "pages_total", "Pages planned, by route and result.", ["route", "result"], r)
        self.calls = Counter(p + "calls_total", "Calls ended, by route and outcome.", ["route", "outcome"],
                             registry=r)
        self.provider_requests = Counter(p + "provider_requests_total",
                                         "Requests to the provider, by endpoint and HTTP status (or error).",
                                         ["endpoint", "code"], registry=r)
        self.provider_errors = Counter(p + "provider_errors_total",
                                       "Provider errors by reason (rejected, auth, rate_limited, unavailable,"
                                       " network).", ["reason"], registry=r)
        self.provider_duration = Histogram(p + "provider_request_duration_seconds",
                                           "Provider request latency.", ["endpoint"], registry=r,
                                           buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.time_to_call = Histogram(p + "time_to_call_seconds",
                                      "Webhook received to provider accepted, for the first call of a page.",
                                      registry=r,
                                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.queue_depth = Gauge(p + "queue_depth", "Pages with work due or in progress.", registry=r)
        self.store_headroom = Gauge(p + "store_memory_headroom_bytes",
                                    "Bytes the store may still grow by before it refuses writes (Redis: maxmemory "
                                    "- used_memory); NaN when it sets no limit (maxmemory 0, SQLite, memory).",
                                    registry=r)
        self.store_headroom.set(math.nan)
        self.checkpoint_failures = ReadCounter(p + "store_checkpoint_failures_total",
                                               "SQLite write-ahead log checkpoints that failed (a full disk, an I/O "
                                               "error); the log grows until one succeeds.", r)
        self.store_operations = ReadCounter(p + "store_operations_total",
                                            "Operations sent to the store: Redis commands and scripts (each one "
                                            "round trip), SQLite operations run by its writer.", r)
        self.store_commits = ReadCounter(p + "store_commits_total",
                                         "SQLite transactions committed, each one fsync, shared by the operations "
                                         "queued together (0 on Redis: its INFO persistence counts its own).", r)
        self.replication_timeouts = Counter(p + "store_replication_timeouts_total",
                                            "Webhooks answered 503 because fewer Redis replicas than "
                                            "store.replicas_ack acknowledged their writes within "
                                            "store.replicas_ack_timeout.",
                                            registry=r)
        self.escalations = Counter(p + "escalations_total", "Escalations past an unanswered call, by route.",
                                   ["route"], registry=r)
        self.template_errors = Counter(p + "template_errors_total",
                                       "Times a call's template failed to render and a fallback was spoken"
                                       " instead, by route.", ["route"], registry=r)
        self.callbacks = Counter(p + "callbacks_total", "Provider callbacks by event and result.",
                                 ["event", "result"], registry=r)
        self.pages_acknowledged = Counter(p + "pages_acknowledged_total",
                                          "Pages acknowledged, by how: api, web (the status page), phone (the"
                                          " acknowledgement digit).", ["via"], registry=r)
        self.silence_requests = Counter(p + "silence_requests_total",
                                        "Alertmanager silences for acknowledged pages, by result (created, failed).",
                                        ["result"], registry=r)
        self.alertmanager_checks = Counter(p + "alertmanager_checks_total",
                                           "Checks with Alertmanager before a call, by result: silenced (the page"
                                           " ends), active, partly, unreachable, error (the call goes ahead).",
                                           ["result"], registry=r)
        self.pages_silenced = Counter(p + "pages_silenced_total", "Pages ended before a call because Alertmanager"
                                      " silenced or inhibited every firing alert of them, by route.", ["route"],
                                      registry=r)
        self.reload_ok = Gauge(p + "config_last_reload_successful",
                               "Whether the last configuration reload succeeded.", registry=r)
        self.reload_time = Gauge(p + "config_last_reload_success_timestamp_seconds",
                                 "Timestamp of the last successful configuration reload.", registry=r)
        self.provider_up = Gauge(p + "provider_healthy",
                                 "1 while the last probe or call found the provider taking our requests (or none"
                                 " has yet); 0 while it refuses the service key, cannot be reached or answers with"
                                 " errors (see provider_status).", registry=r)
        self.provider_status = Gauge(p + "provider_status",
                                     "1 for what the last provider probe or call found (ok, auth, unreachable,"
                                     " error), 0 for the others; all 0 before the first.", ["status"], registry=r)
        self.provider_probes = Counter(p + "provider_probes_total", "Provider health probes, by the status found.",
                                       ["status"], registry=r)
        self.config_hash = Gauge(p + "config_hash", "The loaded config file's SHA-256, its first 48 bits as a "
                                 "number: replicas showing different values run different configs.", registry=r)
        self.heartbeat_last_seen = Gauge(p + "heartbeat_last_seen_timestamp_seconds",
                                         "When each heartbeat was last refreshed (0: never since it was configured).",
                                         ["heartbeat"], registry=r)
        self.heartbeat_up = Gauge(p + "heartbeat_up", "1 while a heartbeat is refreshed within its timeout; 0 when "
                                  "it is missing, or was never refreshed.", ["heartbeat"], registry=r)
        self.clock_skew = Gauge(p + "clock_skew_seconds", "How far this process's wall clock is ahead of the store's"
                                " (negative: behind), which every shared time is read from; 0 for a store in"
                                " this process.", registry=r)
        self.build_info = Info(p + "build", "Build information.", registry=r)
        self.build_info.info({"version": __version__})
        self.provider_up.set(1)
        # Children the webhook path counts on every request, looked up once.
        self.webhook = {result: self.webhooks.labels(result) for result in WEBHOOK_RESULTS}
        self.alerts_firing = self.alerts_received.labels("firing")
        self.alerts_resolved = self.alerts_received.labels("resolved")
        for result in SILENCE_RESULTS:
            self.silence_requests.labels(result)
        for via in ACK_VIAS:
            self.pages_acknowledged.labels(via)
        for status in PROVIDER_STATUSES:
            self.provider_status.labels(status)
            self.provider_probes.labels(status)
        for verdict in VERDICTS:
            self.alertmanager_checks.labels(verdict)

    def page(self, route: str, result: str) -> _Count:
        """pages_total's child for (route, result)."""
        return self.pages.labels(route, result)

    def precreate(self, routes: list[str]) -> None:
        """Create the label combinations dashboards need so they show zeros, not gaps."""
        for route in routes:
            for result in PAGE_RESULTS:
                if result != "no_route":
                    self.page(route, result)
            for outcome in CALL_OUTCOMES:
                self.calls.labels(route, outcome)
            self.escalations.labels(route)
            self.template_errors.labels(route)
            self.pages_silenced.labels(route)
        self.page("", "no_route")

    def heartbeats(self, states: Iterable[tuple[str, float, bool]]) -> None:
        """Show exactly these heartbeats: (name, last seen as Unix time or 0, up); removed ones disappear."""
        self.heartbeat_last_seen.clear()
        self.heartbeat_up.clear()
        for name, last_seen, up in states:
            self.heartbeat_last_seen.labels(name).set(last_seen)
            self.heartbeat_up.labels(name).set(1 if up else 0)

    def observe_provider(self, endpoint: str, code: str, seconds: float) -> None:
        """Hook for the provider client: one call per HTTP request."""
        self.provider_requests.labels(endpoint, code).inc()
        self.provider_duration.labels(endpoint).observe(seconds)
