"""Tracing end to end: a client and a fleet with `tracing = dir:PATH` write their spans, and a
call is one trace across processes: the client's root span, each stage under it, the worker's
run span under it, and the spans the function opened itself under the run span.

The client runs in a process of its own: the provider it installs is global to its process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from droplet.cli.cluster import child_env, purge_namespace

from ..conftest import ROOT, Services, start_cluster

CLIENT = r"""
import droplet
from opentelemetry import trace

def traced_inc(lib, x):
    with trace.get_tracer("user").start_as_current_span("inside traced_inc"):
        return x + 1

with droplet.connect() as client:
    f = client.register(traced_inc, "traced_inc")
    client.register(lambda lib, x: x * 10, "traced_times10")
    assert f(1).get(timeout=30) == 2
    ok, code = client.register_dag("traced_dag", ["traced_inc", "traced_times10"],
                                   [("traced_inc", "traced_times10")])
    assert ok, code
    assert client.call_dag("traced_dag", {"traced_inc": [4]}, direct_response=True,
                           timeout=30) == 50
    client.delete_dag("traced_dag")
print("CLIENT DONE")
"""


def _spans(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(directory.glob("*.jsonl"))
            for line in path.read_text().splitlines()]


def _one(spans: list[dict[str, Any]], name: str, trace_id: str = "") -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name and trace_id in ("", s["trace_id"])]
    assert len(found) == 1, f"{name}: {len(found)} spans among {sorted({s['name'] for s in spans})}"
    return found[0]


def test_a_traced_call_is_one_trace_across_client_and_workers(
        services: Services, tmp_path: Path) -> None:
    spans_dir = tmp_path / "spans"
    settings = services.settings(tracing=f"dir:{spans_dir}", worker_lease_ttl_s=3,
                                 status_interval_s=0.5)
    cluster = start_cluster(settings, tmp_path, workers=2)
    try:
        done = subprocess.run([sys.executable, "-c", CLIENT], env=child_env(settings),
                              capture_output=True, text=True, timeout=90, cwd=ROOT, check=False)
        assert "CLIENT DONE" in done.stdout, done.stdout + done.stderr
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())
    spans = _spans(spans_dir)

    call = _one(spans, "droplet.call traced_inc")
    run = _one(spans, "droplet.run traced_inc", call["trace_id"])
    inside = _one(spans, "inside traced_inc", call["trace_id"])
    assert call["service"] == "droplet-client" and call["parent_id"] is None
    assert run["service"] == inside["service"] == "droplet-worker"
    assert run["trace_id"] == call["trace_id"] == inside["trace_id"]
    assert run["parent_id"] == call["span_id"], "the run span hangs under the call's span"
    assert inside["parent_id"] == run["span_id"], "the function's own span under the run's"
    stages = {s["name"] for s in spans if s["parent_id"] == call["span_id"]
              and s["service"] == "droplet-client"}
    assert stages == {"client.send -> worker.start", "worker.start -> worker.end",
                      "worker.end -> stored", "stored -> client.received"}
    assert call["start_s"] <= run["start_s"] <= run["end_s"] <= call["end_s"]

    dag = _one(spans, "droplet.dag traced_dag")
    steps = [s for s in spans if s["trace_id"] == dag["trace_id"]
             and s["name"].startswith("droplet.run ")]
    assert sorted(s["name"] for s in steps) == ["droplet.run traced_inc",
                                                "droplet.run traced_times10"]
    assert all(s["parent_id"] == dag["span_id"] for s in steps)
    dag_stages = {s["name"] for s in spans if s["parent_id"] == dag["span_id"]
                  and s["service"] == "droplet-client"}
    # Sent by the client straight to the first step's worker (client/dagroutes.py): no
    # scheduler stage.
    assert {"client.send -> traced_inc.start",
            "traced_inc.end -> traced_times10.start",
            "traced_times10.end -> client.received"} <= dag_stages
