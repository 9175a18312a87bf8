"""What the dashboard tests share: a `droplet dashboard` process on a free port, a TCP proxy
that stands in for a broker restart (the shared RabbitMQ is never restarted by these tests),
and a way to make dead letters."""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from droplet.broker_config.names import DEAD_FROM_HEADER, DEAD_REASON_HEADER, QueueNames
from droplet.broker_config.topology import shared_topology
from droplet.cli.cluster import child_env
from droplet.cli.etcd_local import free_port
from droplet.proto import envelope, pb
from droplet.runtime import broker_factory
from droplet.settings import Settings
from droplet.signing import Signer
from tests.conftest import ROOT


class DashboardProcess:
    """`droplet dashboard` as a user starts it, with the given settings, until stop()."""

    def __init__(self, settings: Settings, log_path: Path, interval_s: float = 0.5) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "droplet.cli.main", "dashboard", "--port",
                   str(self.port), "--interval", str(interval_s)]
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(command, env=child_env(settings), cwd=ROOT,
                                         stdout=log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def wait_ready(self, timeout_s: float = 20.0) -> DashboardProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the dashboard exited: {self.log_path.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if self.status()["taken_at"] > 0:
                    return self
            time.sleep(0.1)
        raise AssertionError(f"the dashboard did not answer in {timeout_s}s")

    def status(self) -> dict[str, Any]:
        answer = self.http.get("/api/status")
        answer.raise_for_status()
        return dict(answer.json())

    def wait_for(self, condition: Any, timeout_s: float, what: str) -> dict[str, Any]:
        """Polls /api/status until condition(status) holds; returns that status."""
        deadline = time.monotonic() + timeout_s
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status()
            if condition(status):
                return status
            time.sleep(0.2)
        raise AssertionError(f"{what} did not happen within {timeout_s}s; last status {status}")

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class TcpProxy:
    """Forwards a local port to a target; stop() drops every connection and refuses new ones
    (the broker "goes down"), start() serves again on the same port (it "comes back")."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, server: socket.socket) -> None:
        while self._server is server:
            try:
                client, _ = server.accept()
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            a.close()
            b.close()


def make_dead_letter(settings: Settings, died_in: str, reason: str, name: str) -> None:
    """Puts one (signed) call in the dead-letter queue as if it had died in `died_in`."""
    names = QueueNames(settings.namespace)
    call = pb.FunctionCall(name=name, call_id=f"{name}-call", response_key=f"{name}-call")
    body = envelope.encode([pb.Message(call=call)], Signer(settings.signing_key))
    conn = broker_factory(settings, "test-dead-letters")()
    try:
        conn.declare(shared_topology(names))
        confirmed: list[bool] = []
        conn.publish(names.dead, body, headers={DEAD_FROM_HEADER: died_in,
                                                DEAD_REASON_HEADER: reason},
                     on_confirm=confirmed.append)
        deadline = time.monotonic() + 5
        while not confirmed and time.monotonic() < deadline:
            conn.poll(0.05)
        assert confirmed == [True], "the broker took the dead letter"
    finally:
        conn.close()


def queue_depth(settings: Settings, queue: str) -> int | None:
    conn = broker_factory(settings, "test-depth")()
    try:
        return conn.queue_depth(queue)
    finally:
        conn.close()


def dead_letter_count(settings: Settings) -> int:
    """Messages in the namespace's dead-letter queue now."""
    return queue_depth(settings, QueueNames(settings.namespace).dead) or 0


def declare_holding_queue(settings: Settings, queue: str) -> None:
    """A queue nobody consumes, for requeued messages to land in and be counted."""
    from droplet.broker.interface import QueueSpec, Topology

    conn = broker_factory(settings, "test-holding")()
    try:
        conn.declare(Topology(queues=[QueueSpec(queue)]))
    finally:
        conn.close()


def delete_queue(settings: Settings, queue: str) -> None:
    conn = broker_factory(settings, "test-cleanup")()
    try:
        conn.delete_queue(queue)
    finally:
        conn.close()
