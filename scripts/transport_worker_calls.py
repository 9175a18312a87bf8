# Usage: .venv/bin/python scripts/transport_worker_calls.py amqp|pika N
# (against the RabbitMQ on 127.0.0.1:5672; starts its own etcd)
"""A worker in this process (its main thread profiled with cProfile) serving N plain calls
from a client; prints the worker thread's Python calls per call, split by where they are."""
import cProfile
import pstats
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import droplet
from droplet.cli.etcd_local import LocalEtcd
from droplet.runtime import broker_factory, open_kv
from droplet.settings import Settings
from droplet.worker.service import WorkerService

transport = sys.argv[1]
n = int(sys.argv[2])
etcd = LocalEtcd(Path(tempfile.mkdtemp()) / "etcd").start()
try:
    s = Settings(etcd_endpoints=(etcd.endpoint,), namespace=f"p{uuid.uuid4().hex[:8]}",
                 broker_transport=transport, local_fleet_secret=False)
    prof = cProfile.Profile()
    worker = WorkerService(s, open_kv(s), broker_factory(s, "prof-worker"), "w1")
    profiling = threading.Event()
    timing = threading.Event()

    def run():
        threading.current_thread().prof = prof
        worker.run()

    # profile the worker's main thread only: hook into its serve loop
    real_serve = worker.serve_once
    cpu = [0.0]
    def serve_once(conn, cycle, timeout_s):
        if timing.is_set():
            t0 = time.thread_time()
            try:
                return real_serve(conn, cycle, timeout_s)
            finally:
                cpu[0] += time.thread_time() - t0
        if profiling.is_set():
            prof.enable()
            try:
                return real_serve(conn, cycle, timeout_s)
            finally:
                prof.disable()
        return real_serve(conn, cycle, timeout_s)
    worker.serve_once = serve_once
    t = threading.Thread(target=run, daemon=True)
    t.start()
    from droplet.scheduler.service import SchedulerService
    sched = SchedulerService(s, open_kv(s), broker_factory(s, "prof-scheduler"))
    sched.start()
    client = droplet.connect(settings=s)
    incr = client.register(lambda lib, x: x + 1, "incr")
    direct = sys.argv[3] == "direct" if len(sys.argv) > 3 else False
    for i in range(300):
        incr(i).get(10)
    profiling.set()
    for i in range(n):
        incr(i).get(10)
    profiling.clear()
    time.sleep(0.2)
    timing.set()
    w0 = time.perf_counter()
    for i in range(n):
        incr(i).get(10)
    wall = time.perf_counter() - w0
    timing.clear()
    print(f"{transport}: worker main thread CPU {1e6 * cpu[0] / n:.0f} us per plain call "
          f"(thread_time in its serve loop, unprofiled); client wall {1e3 * wall / n:.2f} ms "
          "per call")
    st = pstats.Stats(prof)
    total = st.total_calls
    by = {}
    for (file, _line, _fn), (_cc, nc, _tt, _ct, _callers) in st.stats.items():
        key = ("pika" if "/pika/" in file else "droplet.broker" if "droplet/broker/" in file
               else "droplet" if "/droplet/" in file
               else "grpc/etcd" if any(m in file for m in ("grpc", "etcd3", "protobuf"))
               else "builtins" if file == "~" else "stdlib/other")
        by[key] = by.get(key, 0) + nc
    print(f"{transport}: worker main thread {total / n:.0f} Python calls per plain call; " +
          ", ".join(f"{k} {v / n:.0f}" for k, v in sorted(by.items(), key=lambda kv: -kv[1])))
    client.close()
    worker.stop()
    t.join(10)
    sched.stop()
finally:
    etcd.stop()
