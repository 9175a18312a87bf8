"""Attack: a function starts a thread (not a daemon) that never ends, and returns.

The worker went on serving, but SIGTERM never ended it: the service stopped ("worker ...
stopped" in its log) and Python's exit then waited for the user's thread for ever, so the
process lived on until its supervisor's kill timeout (`droplet up`: 10 s; docker, systemd,
Kubernetes: theirs). Now it names the thread and exits (cli/services.py).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import droplet
from tests.conftest import Services, start_cluster


def starts_a_thread(lib: Any) -> str:
    def forever() -> None:
        while True:
            time.sleep(0.05)

    threading.Thread(target=forever, name="left-running-by-user").start()
    return str(lib.getid())


def test_sigterm_stops_a_worker_that_user_code_left_a_thread_in(
        services: Services, tmp_path: Path) -> None:
    cluster = start_cluster(services.settings(), tmp_path, workers=1)
    try:
        with droplet.connect(settings=cluster.settings) as client:
            client.register(starts_a_thread, "starts_a_thread")().get(timeout=20)
        worker = cluster.workers[0]
        worker.terminate()
        started = time.monotonic()
        while worker.poll() is None and time.monotonic() - started < 8:
            time.sleep(0.05)
        assert worker.poll() is not None, "the worker did not exit within 8 s of SIGTERM"
        log = next(tmp_path.glob("worker-*.log")).read_text()
        assert "left-running-by-user" in log
    finally:
        cluster.stop()
