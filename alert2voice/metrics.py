"""Every Prometheus metric alert2voice exports (SPEC §6), built on an injected registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from . import __version__

PAGE_RESULTS = ("called", "duplicate", "no_route", "quiet_hours", "throttled", "no_contacts")
CALL_OUTCOMES = ("answered", "acknowledged", "no_answer", "busy", "failed", "voicemail", "cancelled")
WEBHOOK_RESULTS = ("accepted", "bad_request", "unauthorized", "too_large", "unsupported_media_type",
                   "unavailable")


class Metrics:
    """The metric families, registered on one registry (tests get a fresh one each)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        # `_created` series double every counter's output and no dashboard here uses them.
        disable_created_metrics()
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = "alert2voice_"
        self.webhooks = Counter(p + "webhooks_total", "Webhook requests on /alerts by result.", ["result"],
                                registry=r)
        self.alerts_received = Counter(p + "alerts_received_total", "Alerts received, by alert status.",
                                       ["status"], registry=r)
        self.pages = Counter(p + "pages_total", "Pages planned, by route and result.", ["route", "result"],
                             registry=r)
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
        self.escalations = Counter(p + "escalations_total", "Escalations past an unanswered call, by route.",
                                   ["route"], registry=r)
        self.callbacks = Counter(p + "callbacks_total", "Provider callbacks by event and result.",
                                 ["event", "result"], registry=r)
        self.reload_ok = Gauge(p + "config_last_reload_successful",
                               "Whether the last configuration reload succeeded.", registry=r)
        self.reload_time = Gauge(p + "config_last_reload_success_timestamp_seconds",
                                 "Timestamp of the last successful configuration reload.", registry=r)
        self.provider_up = Gauge(p + "provider_healthy",
                                 "0 while the provider rejects our credentials (401/403).", registry=r)
        self.build_info = Info(p + "build", "Build information.", registry=r)
        self.build_info.info({"version": __version__})
        self.provider_up.set(1)
        # Children the webhook path counts on every request, looked up once (labels() takes a lock).
        self.webhook = {result: self.webhooks.labels(result) for result in WEBHOOK_RESULTS}
        self.alerts_firing = self.alerts_received.labels("firing")
        self.alerts_resolved = self.alerts_received.labels("resolved")
        self._pages: dict[tuple[str, str], Any] = {}

    def page(self, route: str, result: str) -> Any:
        """pages_total's child for (route, result), looked up once per pair."""
        child = self._pages.get((route, result))
        if child is None:
            child = self._pages[route, result] = self.pages.labels(route, result)
        return child

    def precreate(self, routes: list[str]) -> None:
        """Create the label combinations dashboards need so they show zeros, not gaps."""
        for route in routes:
            for result in PAGE_RESULTS:
                if result != "no_route":
                    self.page(route, result)
            for outcome in CALL_OUTCOMES:
                self.calls.labels(route, outcome)
            self.escalations.labels(route)
        self.page("", "no_route")

    def observe_provider(self, endpoint: str, code: str, seconds: float) -> None:
        """Hook for the provider client: one call per HTTP request."""
        self.provider_requests.labels(endpoint, code).inc()
        self.provider_duration.labels(endpoint).observe(seconds)
