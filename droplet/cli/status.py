"""`droplet status`: schedulers, workers, DAGs, functions and queue depths."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from droplet import resources
from droplet.broker_config.names import QueueNames, can_be_queue
from droplet.cli.shown import shown
from droplet.errors import DropletError
from droplet.runtime import broker_factory, open_kv
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store.metadata import Metadata


def collect(settings: Settings) -> dict[str, Any]:
    kv = open_kv(settings)
    try:
        metadata = Metadata(kv, settings, Signer(settings.signing_key))
        now = time.time()
        pins = {p.worker_id: p for p in metadata.pins()}
        workers = []
        for w in sorted(metadata.workers(), key=lambda w: w.id):
            pin = pins.get(w.id)
            workers.append({
                "id": w.id, "host": w.host, "pid": w.pid, "alive": True,
                "pinned": f"{pin.dag_name}/{pin.function_name}" if pin else None,
                "utilisation": round(w.utilisation, 3), "queue_depth": w.queue_depth,
                "calls_total": w.calls_total, "errors_total": w.errors_total,
                "cached_keys": len(w.cached_keys), "metrics_port": w.metrics_port or None,
                "uptime_s": round(now - w.started_at, 1),
                "resources": dict(w.resources),
            })
        alive = {w["id"] for w in workers}
        for worker_id, pin in pins.items():
            if worker_id not in alive:
                workers.append({"id": worker_id, "host": "", "pid": 0, "alive": False,
                                "pinned": f"{pin.dag_name}/{pin.function_name}"})
        dags = []
        for record in metadata.dag_records():
            dags.append({
                "name": record.dag.name, "ready": record.ready,
                "functions": list(record.dag.functions),
                "connections": [[c.source, c.sink] for c in record.dag.connections],
            })
        schedulers = [
            {"id": s.id, "host": s.host, "pid": s.pid, "alive": True,
             "uptime_s": round(now - s.started_at, 1), "metrics_port": s.metrics_port or None}
            for s in metadata.schedulers()
        ]
        return {
            "namespace": settings.namespace,
            "schedulers": schedulers,
            "workers": workers,
            "dags": sorted(dags, key=lambda d: d["name"]),
            "functions": metadata.function_names(),
            **_queue_depths(settings, [str(w["id"]) for w in workers]),
        }
    finally:
        kv.close()


def _queue_depths(settings: Settings, worker_ids: list[str]) -> dict[str, Any]:
    """{"queues": {name: depth}} and, when RabbitMQ cannot be reached, "broker_error" saying
    why (the depths are then None): it used to print "-" for every queue and exit 0, so a
    wrong password or a stopped broker looked like a fleet with nothing queued."""
    names = QueueNames.of(settings)
    queues = [names.calls, names.admin, names.work, names.dead]
    queues += [names.worker(w) for w in worker_ids if can_be_queue(names.worker(w))]
    try:
        conn = broker_factory(settings, "droplet-status")()
    except DropletError as exc:
        return {"queues": {q: None for q in queues}, "broker_error": str(exc)}
    try:
        return {"queues": {q: conn.queue_depth(q) for q in queues}}
    finally:
        conn.close()


def run_status(settings: Settings, as_json: bool) -> int:
    """Exit 0, or 1 when RabbitMQ cannot be reached (the report is printed all the same)."""
    report = collect(settings)
    if as_json:
        print(json.dumps(_finite(report), indent=2, allow_nan=False))
        return 1 if report.get("broker_error") else 0
    _say(f"namespace {report['namespace']}")
    print()
    _say(f"SCHEDULERS ({len(report['schedulers'])})")
    for s in report["schedulers"]:
        _say(f"  {s['id']:<40} host={s['host']} pid={s['pid']} up {s['uptime_s']}s")
    print()
    _say(f"WORKERS ({len(report['workers'])})")
    _say(f"  {'ID':<32} {'HOST':<16} {'ALIVE':<6} {'PINNED':<24} {'LOAD':>6} {'CALLS':>8}"
         "  TAGS")
    for w in report["workers"]:
        tags = resources.describe(w.get("resources") or {})
        _say(f"  {w['id']:<32} {w['host']:<16} {('yes' if w['alive'] else 'NO'):<6} "
             f"{(w['pinned'] or '-'):<24} {w.get('utilisation', 0):>6} "
             f"{w.get('calls_total', 0):>8}  {'-' if tags == 'none' else tags}")
    print()
    _say(f"DAGS ({len(report['dags'])})")
    for d in report["dags"]:
        edges = ", ".join(f"{a}->{b}" for a, b in d["connections"]) or "-"
        _say(f"  {d['name']:<24} {' '.join(d['functions'])}  [{edges}]")
    print()
    _say(f"FUNCTIONS ({len(report['functions'])})")
    if report["functions"]:
        _say("  " + " ".join(report["functions"]))
    print()
    _say("QUEUES")
    if report.get("broker_error"):
        _say(f"  RabbitMQ cannot be reached: {report['broker_error']}")
    for name, depth in report["queues"].items():
        _say(f"  {name:<48} {'-' if depth is None else depth}")
    return 1 if report.get("broker_error") else 0


def _say(line: str) -> None:
    """Prints a line of the report; names and hosts come from etcd (cli/shown.py)."""
    print(shown(line))


def _finite(value: Any) -> Any:
    """The report with None for each float that is NaN or infinite: they come from the
    records workers write, and json.dumps wrote them as NaN / Infinity, which is not JSON
    (jq or JSON.parse refused the whole report)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
