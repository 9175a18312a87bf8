"""Python calls per request, worker and client, for single durable calls, single direct calls
and a map: `python scripts/profile_calls.py [N]` (a private etcd, the broker on 127.0.0.1).

Counts, not times: they do not move with the machine's load, so two runs compare."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import droplet
from droplet.cli.cluster import LocalCluster, child_env, purge_namespace
from droplet.cli.etcd_local import LocalEtcd
from droplet.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
STDLIB = os.path.dirname(os.__file__)
sys.path.insert(0, str(ROOT / "scripts"))
from profile_worker import CallCounter  # noqa: E402

counter = CallCounter()


def category(kind: str, where: str) -> str:
    if kind == "c":
        return "C"
    for part in ("pika", "etcd3", "grpc", "google/protobuf", "cloudpickle"):
        if f"/{part}/" in where or f"/{part}" in where.split("site-packages")[-1][:12]:
            return part
    if "/droplet/broker/" in where:
        return "droplet.broker"
    if "/droplet/" in where and "site-packages" not in where:
        return "droplet"
    if where.startswith(STDLIB) and "site-packages" not in where:
        return "stdlib"
    return "other"


def summary(rows: list[list[Any]], per: int, top: int) -> dict[str, Any]:
    by: Counter[str] = Counter()
    funcs: Counter[str] = Counter()
    for kind, where, name, n in rows:
        cat = category(kind, where)
        by[cat] += n
        if kind == "py" and cat not in ("pika", "droplet.broker"):
            funcs[f"{cat} {where.split('/')[-1]} {name}"] += n
    return {"per_request": {k: round(v / per, 1) for k, v in sorted(by.items())},
            "python_total": round(sum(v for k, v in by.items() if k != "C") / per, 1),
            "top": [(k, round(v / per, 2)) for k, v in funcs.most_common(top)]}


def wait_rows(out: Path) -> list[list[Any]]:
    for _ in range(100):
        time.sleep(0.1)
        if out.exists():
            time.sleep(0.2)
            rows: list[list[Any]] = json.loads(out.read_text())
            out.unlink()
            return rows
    raise SystemExit("the worker wrote no counts")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    top = int(os.environ.get("TOP", "25"))
    tmp = Path(tempfile.mkdtemp(prefix="dprof"))
    etcd = LocalEtcd(tmp / "etcd").start()
    settings = Settings(broker_url="amqp://guest:guest@127.0.0.1:5672/%2F",
                        etcd_endpoints=(etcd.endpoint,), namespace=f"p{uuid.uuid4().hex[:8]}",
                        signing_key=os.environ.get("PROFILE_SIGNING_KEY"))  # signed: set it
    cluster = LocalCluster(settings, tmp, log_level="WARNING").start(0, 1)
    out = tmp / "worker.json"
    env = child_env(settings) | {"DROPLET_PROFILE_OUT": str(out)}
    with open(tmp / "worker.log", "wb") as log:
        worker = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "profile_worker.py"),
                                   "--log-level", "WARNING", "worker"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    results: dict[str, Any] = {}
    try:
        cluster.wait_ready(1)
        counter.install()
        with droplet.connect(settings=settings) as client:
            client.register(lambda lib, x: x + 1, "incr")
            scenarios = {
                "durable": lambda i: client.call("incr", i).get(timeout=10),
                "direct": lambda i: client.call_direct("incr", i).get(timeout=10),
            }
            for name, call in scenarios.items():
                for i in range(50):
                    call(i)
                worker.send_signal(signal.SIGUSR1)
                time.sleep(0.3)
                counter.counts.clear()
                counter.on = True
                for i in range(n):
                    assert call(i) == i + 1
                counter.on = False
                worker.send_signal(signal.SIGHUP)
                rows = wait_rows(out)
                results[name] = {"worker": summary(rows, n, top),
                                 "client": summary(counter.rows(), n, top)}
            m = n * 16
            list(client.map("incr", range(500)))
            worker.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
            counter.counts.clear()
            counter.on = True
            assert list(client.map("incr", range(m))) == [i + 1 for i in range(m)]
            counter.on = False
            worker.send_signal(signal.SIGHUP)
            rows = wait_rows(out)
            results["map"] = {"worker": summary(rows, m, top),
                              "client": summary(counter.rows(), m, top)}
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        worker.terminate()
        worker.wait(10)
        cluster.stop()
        cluster.workers = [worker]
        purge_namespace(settings, [])
        etcd.stop()
    json.dump(results, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
