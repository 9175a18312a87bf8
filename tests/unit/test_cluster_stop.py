"""LocalCluster.stop (droplet up's Ctrl-C): one deadline for every process, not one each,
and a second Ctrl-C (`abort`) kills at once. The processes are stand-ins that ignore SIGTERM,
as a worker busy with a long call does. No services."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from droplet.cli.cluster import LocalCluster
from droplet.settings import Settings

_DEAF = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('up', flush=True); time.sleep(60)")


def _cluster(busy: int) -> LocalCluster:
    cluster = LocalCluster(Settings(namespace="t-stop"))
    for _ in range(busy):
        proc = subprocess.Popen([sys.executable, "-c", _DEAF], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        cluster.workers.append(proc)
    return cluster


def _close(cluster: LocalCluster) -> None:
    for proc in cluster.workers:
        assert proc.poll() is not None
        assert proc.stdout is not None
        proc.stdout.close()


def test_busy_workers_share_one_deadline() -> None:
    # It was 10 s per busy worker: 3 of them held Ctrl-C for 30 s.
    cluster = _cluster(3)
    started = time.monotonic()
    cluster.stop(timeout_s=1.0)
    took = time.monotonic() - started
    _close(cluster)
    assert 0.9 <= took < 2.5, took


def test_a_second_ctrl_c_kills_them_now() -> None:
    cluster = _cluster(2)
    abort = threading.Event()
    threading.Timer(0.3, abort.set).start()
    started = time.monotonic()
    cluster.stop(timeout_s=30.0, abort=abort)
    took = time.monotonic() - started
    _close(cluster)
    assert took < 3.0, took
