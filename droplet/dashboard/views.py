"""What each page shows, computed from the sampler: plain values for the templates, and the
filters the templates format them with (durations, ages, rates).

Kept apart from the routes so that the routes only check input and pick a template, and what a
page contains can be read in one place.
"""

from __future__ import annotations

import math
import time
from typing import Any

from droplet.dashboard.history import Call, newest_first
from droplet.dashboard.sampler import Sampler
from droplet.dashboard.svg import Series, dag_svg, line_chart

SUMMARY_WINDOW_S = 300.0  # "calls/s" and latency columns: over the last five minutes
STAGE_LABELS = (("queue_wait_s", "queue wait"), ("run_s", "run"), ("store_s", "store"),
                ("reply_s", "reply"))


def queues(sampler: Sampler) -> dict[str, Any]:
    series = sampler.queue_series()
    shared = [q.name for q in sampler.snapshot.queues if q.role in
              ("calls to schedulers", "admin requests", "shared work", "dead letters")]
    busiest = sorted((q for q in sampler.snapshot.queues if q.name not in shared),
                     key=lambda q: -(q.depth or 0))[:4]
    chosen = shared + [q.name for q in busiest]
    chart = line_chart("Messages ready, by queue",
                       [Series(_short(name), series.get(name, [])) for name in chosen],
                       "", 300.0)
    return {"chart": chart}


def functions(sampler: Sampler) -> dict[str, Any]:
    snapshot = sampler.snapshot
    summary = sampler.function_summary(time.time() - SUMMARY_WINDOW_S)
    in_dags: dict[str, list[str]] = {}
    for dag in snapshot.dags:
        for function in dag.functions:
            in_dags.setdefault(function, []).append(dag.name)
    rows = [{"name": name, "summary": summary.get(name), "dags": in_dags.get(name, [])}
            for name in sorted(set(snapshot.functions) | set(summary))]
    graphs = {dag.name: dag_svg(dag.name, dag.functions, dag.edges, dag.placements)
              for dag in snapshot.dags}
    return {"rows": rows, "graphs": graphs, "registered": set(snapshot.functions)}


def calls(sampler: Sampler, function: str, status: str, limit: int) -> dict[str, Any]:
    chosen = [c for c in sampler.calls() if (not function or c.function == function)
              and (status == "all" or (status == "failed") == c.failed)]
    rows = newest_first(chosen)[:limit]
    slowest = max((c.duration_s for c in rows), default=0.0)
    return {"rows": rows, "function": function, "status": status, "limit": limit,
            "known": sorted({c.function for c in sampler.calls()}), "slowest": slowest,
            "stages": STAGE_LABELS}


def errors(sampler: Sampler, function: str, limit: int) -> dict[str, Any]:
    chosen = [c for c in sampler.errors() if not function or c.function == function]
    return {"rows": newest_first(chosen)[:limit], "function": function}


def plots(sampler: Sampler, function: str, minutes: int) -> dict[str, Any]:
    window = minutes * 60.0
    now = time.time()
    points = sampler.function_points(now - window)
    names = [function] if function else sorted(points)
    overview = line_chart(
        "Calls per second, by function",
        [Series(n, [(p.at, p.calls_per_s) for p in points.get(n, [])]) for n in names[:8]],
        "/s", window, now)
    charts = []
    for name in names:
        mine = points.get(name, [])
        throughput = line_chart(f"{name}: calls and errors per second", [
            Series("calls/s", [(p.at, p.calls_per_s) for p in mine]),
            Series("errors/s", [(p.at, p.errors_per_s) for p in mine]),
        ], "/s", window, now)
        latency = line_chart(f"{name}: run time", [
            Series("p50", [(p.at, p.p50_s) for p in mine]),
            Series("p99", [(p.at, p.p99_s) for p in mine]),
            Series("mean", [(p.at, p.mean_s) for p in mine]),
        ], "s", window, now)
        charts.append({"name": name, "throughput": throughput, "latency": latency})
    return {"overview": overview, "charts": charts, "function": function,
            "minutes": minutes, "known": sorted(points)}


def status(sampler: Sampler) -> dict[str, Any]:
    s = sampler.snapshot
    return {
        "namespace": s.namespace, "taken_at": s.taken_at,
        "etcd": {"up": s.etcd.up, "detail": s.etcd.detail, "since": s.etcd.since},
        "broker": {"up": s.broker.up, "detail": s.broker.detail, "since": s.broker.since},
        "workers": [{"id": w.id, "alive": w.alive, "pinned": w.pinned} for w in s.workers],
        "schedulers": [sc.id for sc in s.schedulers],
        "functions": s.functions, "dags": [d.name for d in s.dags],
        "queues": {q.name: q.depth for q in s.queues},
        "recent_calls": len(sampler.calls()), "recent_errors": len(sampler.errors()),
    }


def stage_widths(call: Call, slowest: float) -> list[tuple[str, float, float]]:
    """(label, seconds, share of the widest bar) of each measured stage, in path order."""
    scale = slowest if slowest > 0 else 1.0
    return [(label, call.stages[key], call.stages[key] / scale)
            for key, label in STAGE_LABELS if key in call.stages]


def _short(queue: str) -> str:
    return queue.split(".", 1)[-1]


# -- template filters ---------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f} \u00b5s"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def ago(at: float) -> str:
    if not at:
        return "never"
    delta = max(0.0, time.time() - at)
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    return f"{delta / 3600:.1f}h ago"


def uptime(started: float) -> str:
    if not started:
        return "-"
    delta = max(0.0, time.time() - started)
    if delta < 120:
        return f"{delta:.0f}s"
    if delta < 7200:
        return f"{delta / 60:.0f}m"
    return f"{delta / 3600:.1f}h"


def rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}/s" if abs(value) >= 0.05 else "0/s"


def clock(at: float) -> str:
    """HH:MM:SS of a unix time ("-" for none, or for one no calendar holds: a NaN or a time
    from a record whose clock is off by ages made the page a 500)."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(at)) if at else "-"
    except (OverflowError, OSError, ValueError):
        return "-"


FILTERS = {"seconds": seconds, "ago": ago, "uptime": uptime, "rate": rate, "clock": clock,
           "stage_widths": stage_widths}
