"""The webhook path's lock-free counters export like prometheus_client's own."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from alert2voice.metrics import HotCounter, Metrics


def test_hot_counter_exports_what_a_counter_would():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hot = HotCounter("x_pages_total", "Pages.", ["route", "result"], ours)
    plain = Counter("x_pages_total", "Pages.", ["route", "result"], registry=theirs)
    for counter in (hot, plain):
        counter.labels("payments", "called").inc()
        counter.labels("payments", "called").inc(2)
        counter.labels("web", "duplicate")
    expected = b"\n".join(line for line in generate_latest(theirs).splitlines() if b"_created" not in line)
    assert generate_latest(ours).strip() == expected.strip()


def test_hot_counter_refuses_what_a_counter_refuses():
    hot = HotCounter("y_total", "Y.", ["result"], CollectorRegistry())
    with pytest.raises(ValueError, match="expected labels"):
        hot.labels("a", "b")
    with pytest.raises(ValueError, match="only go up"):
        hot.labels("a").inc(-1)


def test_metrics_count_pages_by_route_and_result():
    m = Metrics(CollectorRegistry())
    m.precreate(["payments"])
    m.page("payments", "called").inc()
    m.webhook["accepted"].inc()
    m.alerts_firing.inc(3)
    get = m.registry.get_sample_value
    assert get("alert2voice_pages_total", {"route": "payments", "result": "called"}) == 1
    assert get("alert2voice_pages_total", {"route": "payments", "result": "duplicate"}) == 0
    for outcome in ("cancelled", "throttled"):  # every final call state, pre-created at zero
        assert get("alert2voice_calls_total", {"route": "payments", "outcome": outcome}) == 0
    assert get("alert2voice_webhooks_total", {"result": "accepted"}) == 1
    assert get("alert2voice_alerts_received_total", {"status": "firing"}) == 3
