"""Routing: which route each alert goes to, page keys, correlationIds, and who is called at fixed instants."""

import re
import textwrap
from datetime import UTC, datetime

import pytest

from alert2voice.alertmanager import Payload, parse_payload
from alert2voice.config import Config
from alert2voice.config_file import load_config, parse_config
from alert2voice.pages import new_nonce
from alert2voice.routing import (
    PlanCache,
    Target,
    alert_identity,
    correlation_id,
    explain_route,
    first_callable,
    match_routes,
    page_key,
    plan,
    resolve_step,
)

GROUP = '{}:{alertname="HighCPU"}'
ALICE, BOB, CAROL = "+14155550101", "+442071838750", "+14155550199"


def at(text: str) -> datetime:
    """A fixed aware instant; never the real clock."""
    instant = datetime.fromisoformat(text)
    assert instant.tzinfo is not None
    return instant


def alert(status: str = "firing", annotations: dict | None = None, starts: str = "2026-11-26T14:00:00Z",
          **labels: str) -> dict:
    return {"status": status, "labels": {"alertname": "HighCPU", **labels}, "annotations": annotations or {},
            "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z"}


def payload(*alerts: dict, group_key: str = GROUP) -> Payload:
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return parse_payload({"version": "4", "receiver": "alert2voice", "status": status, "alerts": list(alerts),
                          "groupKey": group_key})


@pytest.fixture(scope="module")
def example(example_config_path) -> Config:
    return load_config(example_config_path, env={})


MINIMAL = 'provider: {service_key: k, caller_id: "+15550001234", callback: {allow_unauthenticated: true}}\n'


def config_with(*parts: str) -> Config:
    """A config of MINIMAL plus YAML parts, each dedented on its own."""
    text = MINIMAL + "".join(textwrap.dedent(part) for part in parts)
    return parse_config(text, file="routing.yaml", env={})


# The people of config.example.yaml, with routes that name them directly.
PEOPLE = """\
    contacts:
      alice:
        number: "+14155550101"
        timezone: America/Los_Angeles
        quiet_hours: {from: "22:00", to: "07:00", unless_severity: [critical]}
      bob: {number: "+442071838750", timezone: Europe/London}
      carol:
        number: "+14155550199"
        timezone: America/New_York
        quiet_hours: {from: "21:00", to: "08:00"}
    rotations:
      payments-primary:
        members: [alice, bob]
        shift: 1w
        start: 2026-01-05T09:00:00
        timezone: Europe/London
        overrides:
          - {contact: bob, from: 2026-12-24T00:00:00, to: 2026-12-27T00:00:00}
      future:
        members: [carol]
        shift: 1d
        start: 2027-01-01T09:00:00
    """


@pytest.fixture(scope="module")
def people() -> Config:
    return config_with(PEOPLE, """\
        routes:
          - name: alice-then-bob
            matchers: ['to="alice"']
            escalation: [{call: alice}, {call: bob}]
          - name: quiet-only
            matchers: ['to="quiet"']
            escalation: [{call: alice}, {call: carol}]
          - name: not-started
            matchers: ['to="future"']
            escalation: [{call: rotation:future}, {call: bob}]
        """)


# ------------------------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("labels", "routes"),
    [
        ({"team": "payments", "severity": "critical"}, ["payments-critical"]),
        ({"team": "payments", "severity": "page"}, ["payments-critical"]),
        ({"team": "payments", "severity": "warning"}, ["everything-else"]),
        # Regex matchers are anchored: "critical|page" does not match "criticality".
        ({"team": "payments", "severity": "criticality"}, ["everything-else"]),
        ({"team": "infra", "severity": "critical"}, ["infra-critical"]),
        ({"team": "payments-eu", "severity": "critical"}, ["infra-critical"]),
        ({"severity": "critical"}, ["infra-critical"]),
        ({}, ["everything-else"]),
    ],
)
def test_first_match_wins(example, labels, routes):
    assert [r.name for r in match_routes(example, labels)] == routes


CONTINUE = config_with("""\
    contacts: {bob: {number: "+442071838750"}}
    routes:
      - name: audit
        continue: true
      - name: database
        matchers: ['service="db"']
        continue: true
      - name: critical
        matchers: ['severity="critical"']
      - name: never-after-critical
        matchers: ['severity="critical"']
      - name: rest
    """)


@pytest.mark.parametrize(
    ("labels", "routes"),
    [
        ({"service": "db", "severity": "critical"}, ["audit", "database", "critical"]),
        ({"service": "db", "severity": "warning"}, ["audit", "database", "rest"]),
        ({"service": "web", "severity": "critical"}, ["audit", "critical"]),
        ({}, ["audit", "rest"]),
    ],
)
def test_continue_true_keeps_matching(labels, routes):
    assert [r.name for r in match_routes(CONTINUE, labels)] == routes


MATCHERS = config_with("""\
    routes:
      - name: prod-db
        matchers: ['{service="db", env=~"prod|production"}']
      - name: not-staging
        matchers: ['env!="staging"', 'team!~"test.*"', 'service=~".+"']
      - name: no-team
        matchers: ['team=""']
      - name: rest
    """)


@pytest.mark.parametrize(
    ("labels", "route"),
    [
        ({"service": "db", "env": "prod"}, "prod-db"),
        ({"service": "db", "env": "production"}, "prod-db"),
        ({"service": "db", "env": "prod-eu"}, "not-staging"),
        ({"service": "db", "env": "staging", "team": "x"}, "rest"),
        ({"service": "web", "team": "testers"}, "rest"),
        ({"service": "web", "team": "payments"}, "not-staging"),  # a missing env is "" and not "staging"
        ({"env": "staging"}, "no-team"),  # a missing label matches team=""
        ({"env": "staging", "team": "x"}, "rest"),
    ],
)
def test_matchers_from_config(labels, route):
    assert [r.name for r in match_routes(MATCHERS, labels)] == [route]


# ------------------------------------------------------------------------------------------ page keys


def keys(config: Config, p: Payload) -> dict[str, str]:
    return {page.route.name: page.key for page in plan(config, p).pages}


def test_page_key_is_stable_across_alert_order(example):
    a = alert(instance="node1", severity="critical", team="payments")
    b = alert(instance="node2", severity="critical", team="payments")
    assert keys(example, payload(a, b)) == keys(example, payload(b, a))


def test_page_key_ignores_replica_labels(example):
    first = payload(alert(instance="node1", severity="critical", replica="prom-0", prometheus_replica="a"))
    second = payload(alert(instance="node1", severity="critical", replica="prom-1", prometheus_replica="b"))
    without = payload(alert(instance="node1", severity="critical"))
    assert keys(example, first) == keys(example, second) == keys(example, without)


def test_page_key_ignores_labels_named_in_config():
    config = config_with("dedup: {ignore_labels: [cluster_replica]}\nroutes: [{name: all}]\n")
    first = payload(alert(instance="node1", cluster_replica="x", replica="0"))
    second = payload(alert(instance="node1", cluster_replica="y", replica="0"))
    third = payload(alert(instance="node1", cluster_replica="y", replica="1"))  # replica counts here
    assert keys(config, first) == keys(config, second) != keys(config, third)


def test_page_key_ignores_what_changes_between_resends(example):
    # Alertmanager resends with fresh annotation values (e.g. the current CPU) and startsAt stays or moves.
    first = payload(alert(instance="node1", severity="critical", annotations={"summary": "CPU 91%"}))
    again = payload(alert(instance="node1", severity="critical", annotations={"summary": "CPU 97%"},
                          starts="2026-11-26T14:05:00Z"))
    assert keys(example, first) == keys(example, again)


def test_page_key_changes_when_an_alert_joins(example):
    one = payload(alert(instance="node1", severity="critical"))
    two = payload(alert(instance="node1", severity="critical"), alert(instance="node2", severity="critical"))
    assert keys(example, one)["infra-critical"] != keys(example, two)["infra-critical"]


def test_page_key_differs_across_routes_and_groups():
    ids = [alert_identity({"alertname": "HighCPU", "instance": "node1"}, [])]
    base = page_key("infra-critical", GROUP, ids)
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert base != page_key("everything-else", GROUP, ids)
    assert base != page_key("infra-critical", '{}:{alertname="Other"}', ids)
    assert base == page_key("infra-critical", GROUP, [*ids, *ids])  # a set: duplicates do not count
    # Parts are delimited: moving characters between route and group key changes the key.
    assert page_key("ab", "c", []) != page_key("a", "bc", [])


def test_same_alert_on_two_routes_makes_two_pages():
    config = config_with("routes: [{name: audit, continue: true}, {name: rest}]\n")
    pages = plan(config, payload(alert(instance="node1")))
    assert [p.route.name for p in pages.pages] == ["audit", "rest"]
    assert pages.pages[0].key != pages.pages[1].key
    assert pages.pages[0].identities == pages.pages[1].identities


def test_alert_identity_is_canonical():
    labels = {"b": "2", "a": "1", "replica": "x", "ü": "<&>"}
    assert alert_identity(labels, ["replica"]) == "a=1\nb=2\nü=<&>"
    assert alert_identity(dict(reversed(labels.items())), ["replica"]) == alert_identity(labels, ["replica"])


@pytest.mark.parametrize(("one", "other"), [
    ({"a": "1\nb=2"}, {"a": "1", "b": "2"}),         # a newline in a value cannot forge a second label
    ({"a": '"1"'}, {"a": "1"}),                      # nor can a value that looks escaped
    ({"a": "x\\ny"}, {"a": "x\ny"}),
    ({"a": "1=2"}, {"a=1": "2"}),
])
def test_alert_identity_is_injective(one, other):
    assert alert_identity(one, []) != alert_identity(other, [])


# ------------------------------------------------------------------------------------- correlationId


@pytest.mark.parametrize("attempt", [1, 2, 9, 10, 20, 999, 10**6])
@pytest.mark.parametrize("kind", ["", "r"])
def test_correlation_id_fits_webex(attempt, kind):
    key = page_key("payments-critical", GROUP, ['{"alertname":"HighCPU"}'])
    cid = correlation_id(key, new_nonce(), attempt, kind=kind)
    assert len(cid) <= 50
    assert re.fullmatch(r"[A-Za-z0-9-]+", cid)
    assert correlation_id(key, "", attempt, kind=kind) != cid  # pages stored before nonces keep their old ids


def test_correlation_ids_differ_per_page_attempt_and_kind():
    k1 = page_key("payments-critical", GROUP, ["a"])
    k2 = page_key("payments-critical", GROUP, ["b"])
    ids = {correlation_id(k, nonce, n, kind=kind) for k in (k1, k2) for nonce in ("0badcafe", "feedf00d")
           for n in (1, 2, 11) for kind in ("", "r")}
    assert len(ids) == 24


# ------------------------------------------------------------------------------------------ plan()

FIXTURE_PLANS = [
    # fixture, {route: (instances of firing alerts, instances of resolved alerts)}
    ("firing_DiskFull.json", {"everything-else": (["node3:9100"], [])}),
    ("firing_HighCPU.json", {"infra-critical": (["node1:9100"], []), "everything-else": (["node2:9100"], [])}),
    # Per-alert routing: the critical and the warning alert of one group go to different routes.
    ("mixed_step1_firing.json", {"everything-else": (["a"], []), "infra-critical": (["b"], [])}),
    ("mixed_step2_firing.json", {"everything-else": ([], ["a"]), "infra-critical": (["b"], [])}),
    ("mixed_step3_resolved.json", {"infra-critical": ([], ["b"])}),
    ("prometheus_firing_FlipTargetDown.json", {"infra-critical": (["127.0.0.1:9096"], [])}),
    ("prometheus_resolved_FlipTargetDown.json", {"infra-critical": ([], ["127.0.0.1:9096"])}),
    ("resolved_HighCPU.json", {"infra-critical": ([], ["node1:9100"]), "everything-else": ([], ["node2:9100"])}),
]


def fixture(fixtures_dir, name: str) -> Payload:
    path = fixtures_dir / "alertmanager" / name
    assert path.is_file(), f"Alertmanager fixture {path} is missing"
    return parse_payload(path.read_bytes())


@pytest.mark.parametrize(("name", "expected"), FIXTURE_PLANS, ids=[n for n, _ in FIXTURE_PLANS])
def test_plan_of_each_fixture(example, fixtures_dir, name, expected):
    p = fixture(fixtures_dir, name)

    result = plan(example, p)

    got = {page.route.name: ([a.labels["instance"] for a in page.firing],
                             [a.labels["instance"] for a in page.resolved]) for page in result.pages}
    assert got == expected
    assert result.unrouted == []
    ignore = example.dedup.ignore_labels
    for page in result.pages:
        assert page.group_key == p.groupKey
        assert all(a.firing for a in page.firing)
        assert not any(a.firing for a in page.resolved)
        assert page.identities == tuple(sorted(alert_identity(a.labels, ignore) for a in page.firing))
        assert page.key == page_key(page.route.name, p.groupKey, page.identities)
        assert len(page.claims) == len(page.firing)


def test_mixed_series_keeps_the_critical_page_key(example, fixtures_dir):
    # Step 2 resolves the warning alert (another route); the critical page is the same page as in step 1.
    step1 = keys(example, fixture(fixtures_dir, "mixed_step1_firing.json"))
    step2 = keys(example, fixture(fixtures_dir, "mixed_step2_firing.json"))
    assert step1["infra-critical"] == step2["infra-critical"]
    assert step1["everything-else"] != step2["everything-else"]


def test_plan_severities_are_those_of_firing_alerts(example, fixtures_dir):
    pages = {p.route.name: p for p in plan(example, fixture(fixtures_dir, "mixed_step2_firing.json")).pages}
    assert pages["infra-critical"].severities == {"critical"}
    assert pages["everything-else"].severities == set()


def test_unrouted_alerts(fixtures_dir):
    config = config_with("""\
        routes:
          - name: payments
            matchers: ['team="payments"']
        """)
    p = fixture(fixtures_dir, "firing_HighCPU.json")

    result = plan(config, p)

    assert result.pages == []
    assert [a.labels["instance"] for a in result.unrouted] == ["node1:9100", "node2:9100"]


def test_partly_unrouted_group():
    config = config_with("routes: [{name: critical, matchers: ['severity=\"critical\"']}]\n")
    result = plan(config, payload(alert(instance="n1", severity="critical"), alert(instance="n2", severity="info")))
    assert [(p.route.name, [a.labels["instance"] for a in p.firing]) for p in result.pages] == [("critical", ["n1"])]
    assert [a.labels["instance"] for a in result.unrouted] == ["n2"]


# ------------------------------------------------------------------------------------------ who is called

SHIFT_47 = "shift 47 of payments-primary (alice, bob), 2026-11-23 09:00 → 2026-11-30 09:00 Europe/London"


@pytest.mark.parametrize(
    ("instant", "contact", "reason"),
    [
        pytest.param("2026-11-26T15:00:00+00:00", "alice", SHIFT_47, id="alice-week"),
        pytest.param("2026-12-25T12:00:00+00:00", "bob", "override for bob until 2026-12-27 00:00 Europe/London",
                     id="christmas-override"),
        pytest.param("2026-12-27T00:00:00+00:00", "alice",
                     "shift 51 of payments-primary (alice, bob), 2026-12-21 09:00 → 2026-12-28 09:00 Europe/London",
                     id="override-ended"),
        # Before the DST change (GMT = UTC): the Monday handover is at 09:00 UTC.
        pytest.param("2026-03-23T08:59:00+00:00", "alice", "shift 11 ", id="gmt-before-handover"),
        pytest.param("2026-03-23T09:00:00+00:00", "bob", "shift 12 ", id="gmt-at-handover"),
        # Clocks go forward on Sunday 2026-03-29; Monday's 09:00 BST handover is 08:00 UTC.
        pytest.param("2026-03-29T00:59:00+00:00", "bob", "shift 12 ", id="before-dst-change"),
        pytest.param("2026-03-29T01:00:00+00:00", "bob", "shift 12 ", id="at-dst-change"),
        pytest.param("2026-03-30T07:59:00+00:00", "bob",
                     "shift 12 of payments-primary (alice, bob), 2026-03-23 09:00 → 2026-03-30 09:00 Europe/London",
                     id="bst-before-handover"),
        pytest.param("2026-03-30T08:00:00+00:00", "alice",
                     "shift 13 of payments-primary (alice, bob), 2026-03-30 09:00 → 2026-04-06 09:00 Europe/London",
                     id="bst-at-handover-0900-local"),
        pytest.param("2026-03-30T09:00:00+01:00", "alice", "shift 13 ", id="same-instant-other-offset"),
        pytest.param("2026-03-30T08:30:00+00:00", "alice", "shift 13 ", id="bst-not-utc-handover"),
        pytest.param("2025-12-31T12:00:00+00:00", None,
                     "rotation has not started yet (first shift 2026-01-05 09:00 Europe/London)", id="not-started"),
    ],
)
def test_resolve_step_rotation(example, instant, contact, reason):
    step = example.routes[0].escalation[0]
    assert step.call == "rotation:payments-primary"

    target = resolve_step(example, 0, step, at(instant), ["critical"])

    assert target.contact == contact
    assert target.number == {"alice": ALICE, "bob": BOB, None: None}[contact]
    assert target.reason.startswith(reason)
    assert target.quiet is False


def test_resolve_step_contact(example):
    step = example.routes[0].escalation[1]
    target = resolve_step(example, 1, step, at("2026-11-26T15:00:00+00:00"), ["critical"])
    assert target == Target(step=1, contact="bob", number=BOB, reason="named in step 2", quiet=False)


# Alice: America/Los_Angeles, quiet 22:00-07:00 unless critical. 2026-11-26 is PST (UTC-8).
@pytest.mark.parametrize(
    ("instant", "severities", "quiet"),
    [
        pytest.param("2026-11-26T05:59:00+00:00", ["warning"], False, id="21:59-before"),
        pytest.param("2026-11-26T06:00:00+00:00", ["warning"], True, id="22:00-start-inclusive"),
        pytest.param("2026-11-26T08:00:00+00:00", ["warning"], True, id="midnight"),
        pytest.param("2026-11-26T14:59:00+00:00", ["warning"], True, id="06:59"),
        pytest.param("2026-11-26T15:00:00+00:00", ["warning"], False, id="07:00-end-exclusive"),
        pytest.param("2026-11-26T08:00:00+00:00", ["critical"], False, id="critical-exempt"),
        pytest.param("2026-11-26T08:00:00+00:00", ["warning", "critical"], False, id="any-exempt-severity"),
        pytest.param("2026-11-26T08:00:00+00:00", [], True, id="no-severity"),
        pytest.param("2026-11-26T08:00:00+00:00", ["page"], True, id="page-not-exempt"),
        pytest.param("2026-11-26T00:00:00-08:00", ["warning"], True, id="local-offset"),
        # Summer: PDT (UTC-7): 22:00 local is 05:00 UTC.
        pytest.param("2026-07-01T05:00:00+00:00", ["warning"], True, id="pdt-22:00"),
        pytest.param("2026-07-01T04:59:00+00:00", ["warning"], False, id="pdt-21:59"),
    ],
)
def test_resolve_step_quiet_hours(people, instant, severities, quiet):
    route = people.routes[0]
    target = resolve_step(people, 0, route.escalation[0], at(instant), severities)
    assert (target.contact, target.number, target.quiet) == ("alice", ALICE, quiet)
    assert ("in quiet hours" in target.reason) is quiet


def test_quiet_reason_names_local_time_and_severity(people):
    target = resolve_step(people, 0, people.routes[0].escalation[0], at("2026-11-26T08:00:00+00:00"), ["warning"])
    assert target.reason == "named in step 1; in quiet hours (00:00 PST, severity warning)"
    target = resolve_step(people, 0, people.routes[0].escalation[0], at("2026-11-26T08:00:00+00:00"), [])
    assert target.reason == "named in step 1; in quiet hours (00:00 PST, severity none)"


def test_resolve_step_refuses_naive_instants(example):
    with pytest.raises(ValueError, match="aware"):
        resolve_step(example, 0, example.routes[0].escalation[0], datetime(2026, 11, 26, 12))


# ------------------------------------------------------------------------------------------ explain_route


def test_explain_route_gives_every_step_with_its_reason(example):
    # 00:00 in Los Angeles, alice on call, severity "page" is not exempt from her quiet hours.
    targets = explain_route(example, example.routes[0], at("2026-11-26T08:00:00+00:00"), ["page"])
    assert targets == [
        Target(0, "alice", ALICE, f"{SHIFT_47}; in quiet hours (00:00 PST, severity page)", quiet=True),
        Target(1, "bob", BOB, "named in step 2"),
    ]


def test_explain_route_critical_at_night(example):
    targets = explain_route(example, example.routes[0], at("2026-11-26T08:00:00+00:00"), ["critical"])
    assert [(t.contact, t.quiet, t.reason) for t in targets] == [
        ("alice", False, SHIFT_47), ("bob", False, "named in step 2")]


def test_explain_route_of_contacts_and_rotations(example):
    targets = explain_route(example, example.routes[1], at("2026-12-25T12:00:00+00:00"), ["critical"])
    assert targets == [
        Target(0, "carol", CAROL, "named in step 1"),
        Target(1, "bob", BOB, "override for bob until 2026-12-27 00:00 Europe/London"),
    ]


def test_explain_route_of_empty_escalation(example):
    assert explain_route(example, example.routes[2], at("2026-11-26T15:00:00+00:00"), ["warning"]) == []


# ------------------------------------------------------------------------------------------ first_callable


@pytest.mark.parametrize(
    ("route", "instant", "severities", "start", "expected"),
    [
        pytest.param(0, "2026-11-26T15:00:00+00:00", ["warning"], 0, ("alice", 0), id="daytime"),
        pytest.param(0, "2026-11-26T08:00:00+00:00", ["warning"], 0, ("bob", 1), id="alice-quiet-bob-next"),
        pytest.param(0, "2026-11-26T08:00:00+00:00", ["critical"], 0, ("alice", 0), id="critical-wakes-alice"),
        pytest.param(0, "2026-11-26T15:00:00+00:00", ["warning"], 1, ("bob", 1), id="from-step-2"),
        pytest.param(0, "2026-11-26T15:00:00+00:00", ["warning"], 2, None, id="past-the-last-step"),
        # Alice (LA) and carol (New York, no exemption) both quiet at 00:00 PST / 03:00 EST.
        pytest.param(1, "2026-11-26T08:00:00+00:00", ["critical"], 0, ("alice", 0), id="alice-critical"),
        pytest.param(1, "2026-11-26T08:00:00+00:00", ["warning"], 0, None, id="everyone-quiet"),
        pytest.param(2, "2026-11-26T15:00:00+00:00", ["critical"], 0, ("bob", 1), id="rotation-not-started"),
    ],
)
def test_first_callable(people, route, instant, severities, start, expected):
    target = first_callable(people, people.routes[route], at(instant), severities, start=start)
    assert (None if target is None else (target.contact, target.step)) == expected
    if target is not None:
        assert not target.quiet


def test_first_callable_on_example_routes(example):
    night = at("2026-11-26T08:00:00+00:00")
    assert first_callable(example, example.routes[0], night, {"page"}).contact == "bob"
    assert first_callable(example, example.routes[2], night, {"warning"}) is None


def test_instants_are_compared_in_utc():
    # Guard for the helpers above: fixed instants, aware, never the real clock.
    assert at("2026-03-30T09:00:00+01:00") == datetime(2026, 3, 30, 8, tzinfo=UTC)


def test_plan_cache_is_bounded_and_keyed_on_bytes_and_config(example):
    cache = PlanCache(entries=2, max_body=200)
    other_config = config_with("")
    bodies = [b'{"n": %d}' % i for i in range(3)]
    p = payload(alert(team="payments"))
    planned = plan(example, p)
    for body in bodies:
        cache.put(example, cache.key(body), p, planned)
    assert len(cache) == 2
    assert cache.get(example, cache.key(bodies[0])) is None  # the oldest went first
    assert cache.get(example, cache.key(bodies[2])) == (p, planned)
    assert cache.get(other_config, cache.key(bodies[2])) is None  # planned under another config
    assert cache.get(example, cache.key(bodies[2] + b" ")) is None  # other bytes
    assert cache.key(b"x" * 201) is None  # too large to keep
    assert cache.get(example, cache.key(bodies[1])) == (p, planned)  # used: now the newest
    cache.put(example, cache.key(b"{}"), p, planned)
    assert cache.get(example, cache.key(bodies[1])) is not None and cache.get(example, cache.key(bodies[2])) is None
    cache.put(example, None, p, planned)
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0
