"""Attack: cancel a lean watch (store/etcd_watch.py over store/http2_stream.py) while its thread
is still opening the stream, on a member that accepts the connection but answers nothing (a
SIGSTOPped etcd: its kernel completes the TCP handshake, etcd never sends its SETTINGS).

The watch thread opened the stream under the lock cancel() takes, so cancel() waited for the
open to give up: ~5 s (the open's timeout) in the caller, e.g. a mirror or the value cache
closing at a worker's shutdown. Over grpcio the stream was made at once and cancel() never
waited. cancel() must return at once, the connection must be closed soon after, and the
cancelled watch must report nothing.
Run: .venv/bin/python -m pytest -q tests/attack/test_lean_watch_cancel_during_open.py
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from droplet.cli.etcd_local import LocalEtcd, find_etcd_binary
from droplet.settings import Settings
from droplet.store.etcd import EtcdKV

pytestmark = [pytest.mark.fault, pytest.mark.timeout(60)]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_cancel_while_the_open_waits_for_a_silent_peer_returns_at_once() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    host, port = listener.getsockname()
    accepted: list[socket.socket] = []
    closed = threading.Event()

    def serve() -> None:  # takes the connection, never says a word, notes when it ends
        conn, _ = listener.accept()
        accepted.append(conn)
        conn.settimeout(15)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            return
        conn.close()
        closed.set()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    kv = EtcdKV(Settings(etcd_endpoints=(f"{host}:{port}",)))
    errors: list[Exception] = []
    try:
        before = _fds()
        cancel = kv.watch_prefix("/p/", lambda events: None, errors.append)
        deadline = time.monotonic() + 5
        while not accepted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert accepted, "the watch connected"
        time.sleep(0.2)  # its thread now waits for the peer's SETTINGS
        started = time.monotonic()
        cancel()
        took = time.monotonic() - started
        assert took < 0.5, f"cancel() waited {took:.1f} s for the open to give up"
        assert closed.wait(2), "the cancelled watch's connection was closed"
        time.sleep(0.1)
        assert _fds() <= before, "no socket left open"
        assert not errors, "a cancelled watch reports nothing"
    finally:
        kv.close()
        listener.close()
        for conn in accepted:
            conn.close()
        server.join(5)


@pytest.mark.e2e
@pytest.mark.skipif(find_etcd_binary() is None, reason="needs an etcd binary")
def test_cancel_while_the_open_waits_for_a_stopped_etcd_returns_at_once(tmp_path: Path) -> None:
    etcd = LocalEtcd(tmp_path / "etcd").start()
    kv = EtcdKV(Settings(etcd_endpoints=(etcd.endpoint,)))
    errors: list[Exception] = []
    try:
        kv.put("/p/warm", b"1")
        assert etcd.pid is not None
        os.kill(etcd.pid, signal.SIGSTOP)
        cancel = kv.watch_prefix("/p/", lambda events: None, errors.append)
        time.sleep(0.3)  # the watch thread waits on the stopped member
        started = time.monotonic()
        cancel()
        took = time.monotonic() - started
        assert took < 0.5, f"cancel() waited {took:.1f} s for the open to give up"
        os.kill(etcd.pid, signal.SIGCONT)
        time.sleep(0.3)
        assert not errors, "a cancelled watch reports nothing"
    finally:
        if etcd.pid is not None:
            os.kill(etcd.pid, signal.SIGCONT)
        kv.close()
        etcd.stop()
