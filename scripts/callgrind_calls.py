"""Instructions per call of a worker (callgrind, all its threads): `python
scripts/callgrind_calls.py [N] [PYTHONPATH-of-the-droplet-to-measure]`. The worker runs under
valgrind; instrumentation is switched on only around N durable calls, then N direct calls.
Counts of instructions do not move with the machine's load."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import droplet
from droplet.cli.cluster import LocalCluster, child_env, purge_namespace
from droplet.cli.etcd_local import LocalEtcd
from droplet.settings import Settings


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def dumped_totals(out_dir: Path, before: set[str]) -> tuple[int, int]:
    """(the main thread's instructions, all threads') of the dump that came after `before`:
    the main thread runs every call; the others (watches, the keeper, gRPC) do background
    work whose share per call grows with how slowly the calls run under valgrind."""
    for _ in range(300):
        new = sorted(set(glob.glob(str(out_dir / "cg.*"))) - before)
        if new:
            time.sleep(1.0)  # every thread's file written
            new = sorted(set(glob.glob(str(out_dir / "cg.*"))) - before)
            main = every = 0
            for name in new:
                for line in Path(name).read_text(errors="replace").splitlines():
                    if line.startswith("totals:"):
                        every += int(line.split()[1])
                        main += int(line.split()[1]) if name.endswith("-01") else 0
            return main, every
        time.sleep(0.2)
    raise SystemExit("no callgrind dump")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    path = sys.argv[2] if len(sys.argv) > 2 else ""
    tmp = Path(tempfile.mkdtemp(prefix="dcg"))
    etcd = LocalEtcd(tmp / "etcd").start()
    settings = Settings(broker_url="amqp://guest:guest@127.0.0.1:5672/%2F",
                        etcd_endpoints=(etcd.endpoint,), namespace=f"g{uuid.uuid4().hex[:8]}",
                        signing_key=os.environ.get("PROFILE_SIGNING_KEY"))  # signed: set it
    cluster = LocalCluster(settings, tmp, log_level="WARNING").start(0, 1)
    env = child_env(settings) | {"PYTHONDONTWRITEBYTECODE": "1"}
    if path:
        env["PYTHONPATH"] = path
    with open(tmp / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
             f"--callgrind-out-file={tmp}/cg.%p", sys.executable, "-m", "droplet.cli.main",
             "--log-level", "WARNING", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT,
            cwd=tmp)  # not this checkout: -m puts the working directory first on the path
    results = {}
    try:
        cluster.wait_ready(1, timeout_s=300)
        time.sleep(2.0)  # the client's router reads the fleet: the worker listed for sure
        with droplet.connect(settings=settings) as client:
            client.register(lambda lib, x: x + 1, "incr")
            scenarios = {
                "durable": lambda i: client.call("incr", i).get(timeout=60),
                "direct": lambda i: client.call_direct("incr", i).get(timeout=60),
            }
            for name, call in scenarios.items():
                for i in range(20):
                    call(i)
                before = set(glob.glob(str(tmp / "cg.*")))
                control(worker.pid, "-z")
                control(worker.pid, "-i", "on")
                for i in range(n):
                    assert call(i) == i + 1
                control(worker.pid, "-i", "off")
                control(worker.pid, "-d")
                main, every = dumped_totals(tmp, before)
                results[name] = {"main thread": main // n, "all threads": every // n}
    finally:
        worker.terminate()
        worker.wait(60)
        cluster.stop()
        purge_namespace(settings, [])
        etcd.stop()
    print(path or os.path.dirname(os.path.dirname(droplet.__file__)), results)


if __name__ == "__main__":
    main()
