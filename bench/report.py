"""The table and the JSON of a run, both built from the phases' typed results."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from bench import say
from bench.memory import Memory
from bench.phases import PhaseError, Result
from bench.rig import Plan
from bench.startup import Startup
from bench.storm import STORM, Storms
from bench.throughput import Throughput
from bench.ttc import TimeToCall

# The targets (#6), as ratios to the ceiling measured in the same run where they are ratios.
TARGETS = {
    "duplicate_ratio": 0.6,
    "new_page_ratio": 0.3,
    "time_to_call_p99_ms": 20.0,
    "big_webhook_s": 0.5,
    "rss_idle_mb": 80.0,
    "rss_growth_mb": 30.0,
    "startup_s": 1.0,
    # Not in the issue: Alertmanager gives up on a webhook after its 10 s notify timeout (SPEC §4).
    "storm_answer_s": 10.0,
}
COLUMNS = ("figure", "value", "target", "ratio", "result")
OK, MISSED, ERROR = "ok", "MISSED", "ERROR"


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    figure: str
    value: str
    target: str = ""
    ratio: str = ""
    result: str = ""  # ok, MISSED, ERROR, or empty for a figure without a target


def judged(ok: bool) -> str:
    return OK if ok else MISSED


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _error(figure: str, error: str) -> Row:
    return Row(figure, f"error: {error}", result=ERROR)


# ------------------------------------------------------------------------------------------------- rows


def throughput_rows(t: Throughput) -> list[Row]:
    c, d, n, f = t.ceiling, t.duplicate, t.new_page, t.relay_floor
    runs = " / ".join(_fmt(r.rps) for r in c.runs)
    return [
        Row("ceiling (bare aiohttp + json.loads), median", _fmt(c.rps, " req/s"), "", "1.00"),
        Row("  ceiling runs", f"{runs} req/s"),
        Row("duplicate path", _fmt(d.rps, " req/s"), f">= {TARGETS['duplicate_ratio']} x ceiling",
            _ratio(d.ratio), judged(d.ratio >= TARGETS["duplicate_ratio"])),
        Row("new-page path, webhooks answered", _fmt(n.rps, " req/s"), "", _ratio(n.accepted_ratio)),
        Row("new-page path, sustained with every call placed", _fmt(n.sustained_rps, " webhooks/s"),
            f">= {TARGETS['new_page_ratio']} x ceiling", _ratio(n.ratio),
            judged(n.every_call_placed and n.ratio is not None and n.ratio >= TARGETS["new_page_ratio"])),
        Row("  calls placed / pages called", f"{n.calls_received_by_simulator:,} / {n.pages_called:,}", "all", "",
            judged(n.every_call_placed)),
        Row("  relay floor (webhook -> one provider call, nothing else)", _fmt(f.rps, " webhooks/s"), "",
            _ratio(f.ratio)),
        Row("  new-page path / relay floor", _ratio(n.ratio_to_relay_floor)),
    ]


def time_to_call_rows(t: TimeToCall) -> list[Row]:
    p99 = t.ms["p99"]
    f = t.host_fdatasync_ms
    return [
        Row("time to call p50 at 100 webhooks/s", _fmt(t.ms["p50"], " ms", 1)),
        Row("time to call p99 at 100 webhooks/s", _fmt(p99, " ms", 1), f"<= {TARGETS['time_to_call_p99_ms']:g} ms",
            "", judged(p99 is not None and p99 <= TARGETS["time_to_call_p99_ms"] and t.missing == 0
                       and t.calls_matched == t.webhooks)),
        Row("  host fdatasync (4 KiB) p50 / p99, just before",
            f"{_fmt(f['p50'], ' ms', 2)} / {_fmt(f['p99'], ' ms', 2)}"),
    ]


def storms_rows(s: Storms) -> list[Row]:
    b, u = s.big_webhook, s.burst
    within = f"<= {TARGETS['big_webhook_s'] * 1000:g} ms"
    ok200 = u.statuses.get("200", 0)
    slowest = u.response_ms["max"]
    return [
        Row("5,000-alert webhook answered in", _fmt(b.response_s * 1000, " ms"), within, "",
            judged(b.status == 200 and b.response_s <= TARGETS["big_webhook_s"])),
        Row("  resent (duplicate) answered in", _fmt(b.resend_response_s * 1000, " ms"), within, "",
            judged(b.resend_status == 200 and b.resend_response_s <= TARGETS["big_webhook_s"])),
        Row("  its call placed after", _fmt((b.time_to_call_s or 0) * 1000, " ms"), "", "",
            "" if b.time_to_call_s is not None else MISSED),
        Row(f"{u.groups:,} groups in 1 s: answered 200", f"{ok200:,} / {u.groups:,}", "all", "",
            judged(ok200 == u.groups)),
        Row("  answer time p50 / p99 (from scheduled send)",
            f"{_fmt(u.response_ms['p50'], ' ms')} / {_fmt(u.response_ms['p99'], ' ms')}",
            f"< {TARGETS['storm_answer_s']:g} s", "",
            judged(slowest is not None and slowest < TARGETS["storm_answer_s"] * 1000)),
        Row("  calls placed vs throttle (per number)", f"{u.calls_placed} (allowed {u.calls_allowed_by_throttle})",
            "<= allowed", "", judged(u.throttle_respected)),
        Row("  calls placed vs storm rule", f"{u.calls_placed} (allowed {u.calls_allowed_by_storm_rule})",
            "<= allowed", "", judged(u.storm_rule_respected)),
    ]


def memory_rows(m: Memory) -> list[Row]:
    st = m.store
    store = (_error("  store after the memory run", st.error) if st.error else
             Row("  store after the memory run", f"{st.pages or 0:,} pages, {st.claims or 0:,} claims, "
                 f"{st.bytes / 1e6:.1f} MB"))
    return [
        Row("RSS at idle", _fmt(m.rss_idle_mb, " MB", 1), f"<= {TARGETS['rss_idle_mb']:g} MB", "",
            judged(m.rss_idle_mb <= TARGETS["rss_idle_mb"])),
        Row(f"RSS growth after {m.webhooks:,} webhooks", _fmt(m.rss_growth_mb, " MB", 1),
            f"<= {TARGETS['rss_growth_mb']:g} MB", "", judged(m.rss_growth_mb <= TARGETS["rss_growth_mb"])),
        store,
    ]


def startup_rows(s: Startup) -> list[Row]:
    return [Row("startup to /-/ready (median / max)", f"{_fmt(s.median_s * 1000, ' ms')} / "
                f"{_fmt(s.max_s * 1000, ' ms')}", f"<= {TARGETS['startup_s'] * 1000:g} ms", "",
                judged(s.max_s <= TARGETS["startup_s"]))]


def error_rows(e: PhaseError) -> list[Row]:
    return [_error(e.title, e.error)]


ROWS: dict[type, Callable[[Any], list[Row]]] = {
    Throughput: throughput_rows, TimeToCall: time_to_call_rows, Storms: storms_rows, Memory: memory_rows,
    Startup: startup_rows, PhaseError: error_rows,
}
# Where each result goes in the JSON's `results`; None: its fields are keys there themselves.
KEYS: dict[type, str | None] = {Throughput: None, TimeToCall: "time_to_call", Storms: "storms", Memory: "memory",
                                Startup: "startup"}


def table(results: Iterable[Result]) -> list[Row]:
    """Rows in the order of the results: figure, value, target, ratio, result."""
    return [row for result in results for row in ROWS[type(result)](result)]


def results_json(results: Iterable[Result], profiles: dict[str, Any]) -> dict[str, Any]:
    """Every raw figure, keyed as bench/README.md's "Reading the JSON" says; failed phases are left out."""
    out: dict[str, Any] = {}
    for result in results:
        if isinstance(result, PhaseError):
            continue
        key = KEYS[type(result)]
        out.update(asdict(result) if key is None else {key: asdict(result)})
    if profiles:
        out["profiles"] = profiles
    return out


def errors(rows: Iterable[Row]) -> dict[str, str]:
    """Each figure or phase that could not be measured, with its error."""
    return {r.figure.strip(): r.value.removeprefix("error: ") for r in rows if r.result == ERROR}


def missed(rows: Iterable[Row]) -> list[str]:
    return [r.figure.strip() for r in rows if r.result == MISSED]


def print_table(rows: Sequence[Row]) -> None:
    cells = [asdict(r) for r in rows]
    widths = {c: max([len(c), *(len(r[c]) for r in cells)]) for c in COLUMNS}
    say("  ".join(c.ljust(widths[c]) for c in COLUMNS))
    say("  ".join("-" * widths[c] for c in COLUMNS))
    for r in cells:
        say("  ".join(r[c].ljust(widths[c]) for c in COLUMNS))


def document(*, plan: Plan, machine: dict[str, Any], callbacks: str, elapsed_s: float, results: Sequence[Result],
             rows: Sequence[Row], profiles: dict[str, Any]) -> dict[str, Any]:
    """The JSON file: when, where, with which settings, every raw figure, the table, what was missed or failed."""
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": plan.name,
        "elapsed_s": round(elapsed_s, 1),
        "machine": machine,
        "settings": {"duration_s": plan.duration, "warmup_s": plan.warmup, "connections": plan.connections,
                     "ttc_seconds": plan.ttc_seconds, "memory_webhooks": plan.memory_webhooks,
                     "simulator_callbacks": callbacks, "config": "bench/config.yaml", "storm": STORM},
        "targets": TARGETS,
        "results": results_json(results, profiles),
        "table": [asdict(r) for r in rows],
        "missed": missed(rows),
        "errors": errors(rows),
    }
