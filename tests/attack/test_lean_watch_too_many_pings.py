"""Attack (real etcd): an etcd whose --grpc-keepalive-min-time is longer than the lean watch's
ping interval (store/http2_stream.py: a ping after 6 s quiet).

etcd counts each ping that comes sooner than its minimum as a strike, and at the third ends
the connection with a GOAWAY ENHANCE_YOUR_CALM "too_many_pings". grpcio then doubles its
keepalive time for what follows: one broken watch, once. The lean watch pinged every new
stream at the same pace, so each watch its owner opened again was cut ~24 s later (min time
7 s: a mirror re-read everything at 24 s, 48 s, ..., and the value cache emptied each time).
Here the intervals are scaled down (pings after 1 s, etcd's minimum 1.5 s).
Run: .venv/bin/python -m pytest -q tests/attack/test_lean_watch_too_many_pings.py
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from droplet.cli.etcd_local import LocalEtcd, find_etcd_binary
from droplet.settings import Settings
from droplet.store import http2_stream
from droplet.store.etcd import EtcdKV

pytestmark = [
    pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(90),
    pytest.mark.skipif(find_etcd_binary() is None, reason="needs an etcd binary"),
]


@pytest.fixture
def strict_etcd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalEtcd]:
    """An etcd that wants at least 1.5 s between a client's pings."""
    popen = subprocess.Popen

    def with_min_time(args: list[str], *rest: Any, **kwargs: Any) -> Any:
        return popen([*args, "--grpc-keepalive-min-time", "1500ms"], *rest, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(subprocess, "Popen", with_min_time)
        etcd = LocalEtcd(tmp_path / "etcd").start()
    try:
        yield etcd
    finally:
        etcd.stop()


def test_a_watch_cut_for_too_many_pings_is_not_cut_again_and_again(
        strict_etcd: LocalEtcd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http2_stream, "_PING_AFTER_S", 1.0)
    monkeypatch.setattr(http2_stream, "_PING_TIMEOUT_S", 1.0)
    monkeypatch.setattr(http2_stream, "_ping_slowdown", 1, raising=False)
    kv = EtcdKV(Settings(etcd_endpoints=(strict_etcd.endpoint,)))
    errors: list[Exception] = []
    cancels = []
    lock = threading.Lock()

    def watch() -> None:  # as a mirror does: a broken watch is opened again
        with lock:
            cancels.append(kv.watch_prefix("/p/", lambda events: None, broken))

    def broken(error: Exception) -> None:
        errors.append(error)
        watch()

    try:
        watch()
        time.sleep(14)
        assert errors, "etcd's minimum was broken once (the first watch's pace)"
        assert "too_many_pings" in str(errors[0]) or "closed by the peer" in str(errors[0])
        assert len(errors) == 1, f"the watch was cut {len(errors)} times in 14 s: {errors}"
    finally:
        with lock:
            for cancel in cancels:
                cancel()
        kv.close()
