"""The table and the JSON of a run, both built from the phases' typed results."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from bench import say
from bench.costs import Cost
from bench.memory import Memory
from bench.phases import PhaseError, Result
from bench.redis_server import DURABLE
from bench.replicas import SHOWN, Replicas
from bench.rig import FULL, REDIS, Plan
from bench.startup import Startup
from bench.store_stats import RedisStats, StoreStats
from bench.storm import STORM, Storms
from bench.throughput import Paths, Throughput
from bench.ttc import TARGET_RATE, TimesToCall

# The targets, as ratios to the ceiling measured in the same run where they are ratios: the paths and time to
# call from #23 (item 4), the others from #6.
TARGETS = {
    "duplicate_ratio": 0.8,
    "new_page_ratio": 0.10,
    "time_to_call_p99_ms": 10.0,
    "big_webhook_s": 0.5,
    "rss_idle_mb": 80.0,
    "rss_growth_mb": 30.0,
    "startup_s": 1.0,
    # Not in the issue: Alertmanager gives up on a webhook after its 10 s notify timeout (SPEC §4).
    "storm_answer_s": 10.0,
    # Every Redis key expires or belongs to live work (#13, item 2): Redis memory is bounded.
    "redis_keys_unbounded": 0,
}
# Where a store has targets of its own (#23, item 4): Redis is a loopback round trip away.
STORE_TARGETS = {REDIS: {"duplicate_ratio": 0.7, "new_page_ratio": 0.08, "time_to_call_p99_ms": 15.0}}
CELL = ("target", "ratio", "result")  # after each store's value
OK, MISSED, ERROR = "ok", "MISSED", "ERROR"


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    figure: str
    value: str
    target: str = ""
    ratio: str = ""
    result: str = ""  # ok, MISSED, ERROR, or empty for a figure without a target
    store: str = ""   # the store it was measured on; empty for a figure of every store (the ceiling)

    @property
    def name(self) -> str:
        """The figure, and the store it was measured on: how the missed and failed ones are listed."""
        return self.figure.strip() + (f" ({self.store})" if self.store else "")


def targets(store: str) -> dict[str, float]:
    """The targets a store's figures are judged by."""
    return {**TARGETS, **STORE_TARGETS.get(store, {})}


def judged(ok: bool) -> str:
    return OK if ok else MISSED


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _error(figure: str, error: str, store: str) -> Row:
    return Row(figure, f"error: {error}", result=ERROR, store=store)


# ------------------------------------------------------------------------------------------------- rows


def throughput_rows(t: Throughput) -> list[Row]:
    """The ceiling, then each figure of every store's paths, one store after the other."""
    c, f = t.ceiling, t.relay_floor
    runs = " / ".join(_fmt(r.rps) for r in c.runs)
    rows = [Row("ceiling (bare aiohttp + json.loads), median", _fmt(c.rps, " req/s"), "", "1.00"),
            Row("  ceiling runs", f"{runs} req/s")]
    rows += [_duplicate_row(p) for p in t.stores]
    rows += [each(p.duplicate.cost, "request", "duplicate", p.store) for each in COST_ROWS for p in t.stores]
    rows += [figure(p) for figure in (_answered_row, _sustained_row, _placed_row) for p in t.stores]
    rows += [each(p.new_page.cost, "page", "new-page", p.store) for each in COST_ROWS for p in t.stores]
    rows.append(Row("  relay floor (webhook -> one provider call, nothing else)", _fmt(f.rps, " webhooks/s"), "",
                    _ratio(f.ratio)))
    rows += [Row("  new-page path / relay floor", _ratio(p.new_page.ratio_to_relay_floor), store=p.store)
             for p in t.stores]
    return rows


def _duplicate_row(p: Paths) -> Row:
    d, want = p.duplicate, targets(p.store)["duplicate_ratio"]
    return Row("duplicate path", _fmt(d.rps, " req/s"), f">= {want} x ceiling", _ratio(d.ratio),
               judged(d.ratio >= want), p.store)


def _answered_row(p: Paths) -> Row:
    return Row("new-page path, webhooks answered", _fmt(p.new_page.rps, " req/s"), "",
               _ratio(p.new_page.accepted_ratio), store=p.store)


def _sustained_row(p: Paths) -> Row:
    n, want = p.new_page, targets(p.store)["new_page_ratio"]
    return Row("new-page path, sustained with every call placed", _fmt(n.sustained_rps, " webhooks/s"),
               f">= {want} x ceiling", _ratio(n.ratio),
               judged(n.every_call_placed and n.ratio is not None and n.ratio >= want), p.store)


def _placed_row(p: Paths) -> Row:
    n = p.new_page
    return Row("  calls placed / pages called", f"{n.calls_received_by_simulator:,} / {n.pages_called:,}", "all",
               "", judged(n.every_call_placed), p.store)


# ---- what a page (or request) costs: beside each path's ratio and each time to call (bench/costs.py)


def _cpu_row(cost: Cost | None, unit: str, where: str, store: str) -> Row:
    return Row(f"  {where}: serve CPU per {unit}", _fmt(cost.cpu_ms if cost else None, " ms", 2), store=store)


def _round_trips_row(cost: Cost | None, unit: str, where: str, store: str) -> Row:
    """Redis: round trips (Redis's read events), what serve says it sent, and the scripts and commands they ran;
    SQLite: the operations its writer ran (no round trip: the store is in the process)."""
    figure = f"  {where}: store round trips per {unit}"
    if cost is None:
        return Row(figure, "-", store=store)
    sent = _fmt(cost.client_operations, "", 2) if cost.client_operations is not None else "n/a"
    if cost.round_trips is None:
        return Row(figure, f"{sent} writer operations (in process)", store=store)
    return Row(figure, f"{cost.round_trips:.2f} ({sent} sent by serve; {_fmt(cost.scripts, '', 2)} scripts, "
               f"{_fmt(cost.commands, '', 1)} commands)", store=store)


def _fsyncs_row(cost: Cost | None, unit: str, where: str, store: str) -> Row:
    """fsync + fdatasync of the store's process (perf; n/a without it), and on SQLite its commits."""
    figure = f"  {where}: fsyncs per {unit}"
    if cost is None:
        return Row(figure, "-", store=store)
    fsyncs = "n/a (perf)" if cost.fsyncs is None else f"{cost.fsyncs:.2f}"
    if cost.round_trips is not None:  # Redis: the AOF's
        return Row(figure, f"{fsyncs} (AOF)", store=store)
    commits = "n/a" if cost.commits is None else f"{cost.commits:.2f}"
    return Row(figure, f"{fsyncs} ({commits} commits)", store=store)


COST_ROWS = (_cpu_row, _round_trips_row, _fsyncs_row)


def time_to_call_rows(t: TimesToCall) -> list[Row]:
    """Per rate: p50, p99 (judged at TARGET_RATE), the host's fdatasync just before, and the cost per webhook."""
    want = targets(t.store)["time_to_call_p99_ms"]
    rows = []
    for run in t.runs:
        rate, p99, f = f"{run.rate_per_s:g}", run.ms["p99"], run.host_fdatasync_ms
        complete = run.missing == 0 and run.calls_matched == run.webhooks
        judge = run.rate_per_s == TARGET_RATE
        rows += [
            Row(f"time to call p50 at {rate} webhooks/s", _fmt(run.ms["p50"], " ms", 1), store=t.store),
            Row(f"time to call p99 at {rate} webhooks/s", _fmt(p99, " ms", 1), f"<= {want:g} ms" if judge else "",
                "", judged(p99 is not None and p99 <= want and complete) if judge else ("" if complete else MISSED),
                t.store),
            Row(f"  at {rate}/s: host fdatasync (4 KiB) p50 / p99, just before",
                f"{_fmt(f['p50'], ' ms', 2)} / {_fmt(f['p99'], ' ms', 2)}", store=t.store),
            *(each(run.cost, "webhook", f"at {rate}/s", t.store) for each in COST_ROWS),
        ]
    return rows


def replicas_rows(r: Replicas) -> list[Row]:
    """Each replica's rate beside one alone's, the cost per page alone and together, and what this machine shows."""
    n, alone = r.replicas, r.alone.sustained_rps

    def rate(run_rps: float) -> str:
        return _ratio(run_rps / alone) if alone else "-"

    rows = [Row(f"{n} replicas, one redis-server: new-page, one replica alone", _fmt(alone, " webhooks/s"),
                "", "1.00")]
    rows += [Row(f"  replica {run.replica} of {n}, all loaded at once",
                 f"{_fmt(run.sustained_rps, ' webhooks/s')} ({_fmt(run.load.rps)} answered/s)", "", rate(
                     run.sustained_rps)) for run in r.together]
    rows.append(Row(f"  {n} replicas together, every call placed", _fmt(r.combined_sustained_rps, " webhooks/s"),
                    "all placed", rate(r.combined_sustained_rps), judged(r.every_call_placed)))
    a, t = r.alone_cost, r.together_cost
    rows += [
        Row("  per page alone / together: serve CPU",
            f"{_fmt(a.cpu_ms, ' ms', 2)} / " + ", ".join(_fmt(run.cpu_ms_per_page, " ms", 2) for run in r.together)),
        Row("  per page alone / together: round trips", f"{_fmt(a.round_trips, '', 2)} / {_fmt(t.round_trips, '', 2)}"),
        Row("  per page alone / together: failed commands",
            f"{_fmt(a.failed_commands, '', 3)} / {_fmt(t.failed_commands, '', 3)}"),
        Row("  per page alone / together: fsyncs (AOF)",
            f"{_fmt(a.fsyncs, '', 2) if a.fsyncs is not None else 'n/a'} / "
            f"{_fmt(t.fsyncs, '', 2) if t.fsyncs is not None else 'n/a'}"),
        Row(f"  what {r.cores} cores can show", SHOWN.format(cores=r.cores)),
    ]
    return [replace(row, store=r.store) for row in rows]


def storms_rows(s: Storms) -> list[Row]:
    b, u = s.big_webhook, s.burst
    within = f"<= {TARGETS['big_webhook_s'] * 1000:g} ms"
    ok200 = u.statuses.get("200", 0)
    slowest = u.response_ms["max"]
    rows = [
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
    return [replace(r, store=s.store) for r in rows]


def memory_rows(m: Memory) -> list[Row]:
    load = f"{m.webhooks_planned:,} webhooks"
    if m.webhooks_planned < FULL.memory_webhooks:
        load += " (short run)"  # the full run sends FULL.memory_webhooks
    return [
        Row("RSS at idle", _fmt(m.rss_idle_mb, " MB", 1), f"<= {TARGETS['rss_idle_mb']:g} MB", "",
            judged(m.rss_idle_mb <= TARGETS["rss_idle_mb"]), m.store),
        Row(f"RSS growth after {load}", _fmt(m.rss_growth_mb, " MB", 1),
            f"<= {TARGETS['rss_growth_mb']:g} MB", "", judged(m.rss_growth_mb <= TARGETS["rss_growth_mb"]), m.store),
        *store_rows(m),
    ]


def store_rows(m: Memory) -> list[Row]:
    """What the store held after the memory run; on Redis, its memory and the keys that would not go away."""
    figure, st = "  store after the memory run", m.stats
    if st.error:
        return [_error(figure, st.error, m.store)]
    if isinstance(st, StoreStats):
        return [Row(figure, f"{st.pages or 0:,} pages, {st.claims or 0:,} claims, {st.bytes / 1e6:.1f} MB",
                    store=m.store)]
    assert isinstance(st, RedisStats)
    want = TARGETS["redis_keys_unbounded"]
    return [
        Row(figure, f"used_memory {st.used_memory / 1e6:.1f} MB, {st.keys:,} keys", store=m.store),
        Row("  keys neither expiring nor live work", f"{st.unbounded:,} of {st.keys:,} ({st.live_pages:,} live pages)",
            f"{want:g}", "", judged(st.unbounded <= want), m.store),
    ]


def startup_rows(s: Startup) -> list[Row]:
    return [Row("startup to /-/ready (median / max)", f"{_fmt(s.median_s * 1000, ' ms')} / "
                f"{_fmt(s.max_s * 1000, ' ms')}", f"<= {TARGETS['startup_s'] * 1000:g} ms", "",
                judged(s.max_s <= TARGETS["startup_s"]), s.store)]


def error_rows(e: PhaseError) -> list[Row]:
    return [_error(e.title, e.error, e.store)]


ROWS: dict[type, Callable[[Any], list[Row]]] = {
    Throughput: throughput_rows, TimesToCall: time_to_call_rows, Storms: storms_rows, Memory: memory_rows,
    Replicas: replicas_rows, Startup: startup_rows, PhaseError: error_rows,
}
# Where each store's result goes in the JSON's `results.stores.<store>` (Throughput: its Paths' fields).
KEYS: dict[type, str] = {TimesToCall: "time_to_call", Storms: "storms", Memory: "memory", Replicas: "replicas",
                         Startup: "startup"}


def table(results: Iterable[Result]) -> list[Row]:
    """Rows in the order of the results: figure, value, target, ratio, result, store."""
    return [row for result in results for row in ROWS[type(result)](result)]


def _without_store(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != "store"}


def results_json(results: Iterable[Result], profiles: dict[str, Any]) -> dict[str, Any]:
    """Every raw figure, keyed as bench/README.md's "Reading the JSON" says; failed phases are left out."""
    out: dict[str, Any] = {}
    stores: dict[str, dict[str, Any]] = {}
    for result in results:
        if isinstance(result, PhaseError):
            continue
        if isinstance(result, Throughput):
            out.update(ceiling=asdict(result.ceiling), relay_floor=asdict(result.relay_floor))
            for paths in result.stores:
                stores.setdefault(paths.store, {}).update(_without_store(asdict(paths)))
        else:
            stores.setdefault(result.store, {})[KEYS[type(result)]] = _without_store(asdict(result))
    if stores:
        out["stores"] = stores
    if profiles:
        out["profiles"] = profiles
    return out


def errors(rows: Iterable[Row]) -> dict[str, str]:
    """Each figure or phase that could not be measured (and its store), with its error."""
    return {r.name: r.value.removeprefix("error: ") for r in rows if r.result == ERROR}


def missed(rows: Iterable[Row]) -> list[str]:
    return [r.name for r in rows if r.result == MISSED]


# ------------------------------------------------------------------------------------------------ table


def stores_in(rows: Iterable[Row]) -> list[str]:
    """The stores the rows were measured on, in the order they first appear."""
    return list(dict.fromkeys(r.store for r in rows if r.store))


def grid(rows: Sequence[Row]) -> list[list[str]]:
    """The header and one line per figure, each store's value, target, ratio and result side by side; a figure
    of every store (the ceiling, the relay floor) is in every store's columns."""
    stores = stores_in(rows) or [""]
    lines: dict[str, dict[str, Row]] = {}
    for r in rows:
        cells = lines.setdefault(r.figure, {})
        for store in ([r.store] if r.store else stores):
            cells[store] = r
    header = ["figure", *(c for store in stores for c in (store or "value", *CELL))]
    body = [[figure, *(c for store in stores for c in _cells(cells.get(store)))] for figure, cells in lines.items()]
    return [header, *body]


def _cells(row: Row | None) -> tuple[str, str, str, str]:
    return ("", "", "", "") if row is None else (row.value, row.target, row.ratio, row.result)


def print_table(rows: Sequence[Row]) -> None:
    lines = grid(rows)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for i, line in enumerate(lines):
        say("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            say("  ".join("-" * w for w in widths))


def document(*, plan: Plan, machine: dict[str, Any], callbacks: str, stores: Sequence[str], elapsed_s: float,
             results: Sequence[Result], rows: Sequence[Row], profiles: dict[str, Any],
             replicas: int = 1) -> dict[str, Any]:
    """The JSON file: when, where, with which settings, every raw figure, the table, what was missed or failed."""
    settings = {"duration_s": plan.duration, "warmup_s": plan.warmup, "connections": plan.connections,
                "ttc_seconds": plan.ttc_seconds, "memory_webhooks": plan.memory_webhooks,
                "simulator_callbacks": callbacks, "stores": list(stores), "replicas": replicas,
                "config": "bench/config.yaml",
                "storm": STORM}
    if REDIS in stores:
        settings["redis_server"] = DURABLE
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": plan.name,
        "elapsed_s": round(elapsed_s, 1),
        "machine": machine,
        "settings": settings,
        "targets": {store: targets(store) for store in stores},
        "results": results_json(results, profiles),
        "table": [asdict(r) for r in rows],
        "missed": missed(rows),
        "errors": errors(rows),
    }
