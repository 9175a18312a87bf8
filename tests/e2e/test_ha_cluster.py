"""A highly available fleet: a 3-node RabbitMQ cluster with quorum queues and a 3-member etcd
cluster, with a scheduler, workers and a client.

The scenarios run against tests/ha_backend.py's HaBackend, started by the mode of the run
(DROPLET_TEST_SERVICES): in containers mode every node, the scheduler and the workers are
containers on a network of the test's own (tests/ha_containers.py); otherwise they are local
processes (tests/ha_services.py). One or the other, never both.

Each scenario loses part of a cluster with calls in flight, and proves that every call
completes with its own correct result, that each call has one outcome (what the client got is
what is stored), and prints its figures: calls, completed, re-runs, time to recover.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.run_marks import count_runs, register_recording
from tests.ha_backend import Fleet, HaBackend, report

# worker_image: containers mode builds the worker image before the tests.
pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.cluster,
              pytest.mark.worker_image]


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaBackend]:
    from tests.conftest import _mode

    backend: Any
    if _mode() == "containers":
        from tests.containers.services import remove_leftovers
        from tests.ha_containers import ContainerHa

        remove_leftovers()
        backend = ContainerHa()
    else:
        from tests.ha_services import HaServices, missing_tools

        if missing_tools() is not None:
            pytest.skip(f"local processes: {missing_tools()}")
        backend = HaServices(tmp_path_factory.mktemp("ha"))
    started = time.monotonic()
    backend.start()
    report(f"[{backend.kind}] 3 RabbitMQ nodes clustered and 3 etcd members up in "
           f"{time.monotonic() - started:.1f}s")
    yield backend
    backend.stop()


# -- etcd fail-over, in-process --------------------------------------------------------------


@pytest.mark.timeout(360)  # the first test also starts both clusters
def test_the_store_moves_to_another_member_when_its_member_dies(ha: HaBackend) -> None:
    """Reads, writes, transactions and lease keepalives go on when the member a process talks
    to is killed; a mirror watching through that member re-establishes its watch on another
    member and misses no write."""
    from droplet.store.etcd import EtcdKV
    from droplet.store.kv import Put, VersionIs
    from droplet.store.mirror import PrefixMirror

    settings = ha.settings()
    prefix = settings.etcd_prefix + "failover/"
    kv = EtcdKV(settings)
    mirror = PrefixMirror(kv, prefix).start()
    lease = kv.grant_lease(5)
    member = next(m for m in ha.etcd_members if m.address == kv.endpoint_in_use)
    expected: dict[str, bytes] = {}
    try:
        for i in range(40):
            kv.put(f"{prefix}{i:03d}", b"x")
            expected[f"{i:03d}"] = b"x"
        member.kill()
        killed_at = time.monotonic()
        for i in range(40, 80):
            ok, _ = kv.txn([VersionIs(f"{prefix}{i:03d}", 0)], [Put(f"{prefix}{i:03d}", b"y")])
            assert ok
            expected[f"{i:03d}"] = b"y"
        lease.refresh()  # still known: the keepalive reached a live member
        for i in range(80, 120):
            kv.put(f"{prefix}{i:03d}", b"z", lease=lease.id)
            expected[f"{i:03d}"] = b"z"
        moved_s = time.monotonic() - killed_at
        assert kv.endpoint_in_use != member.address
        # A re-sync fills the mirror a moment before its new watch is made: wait for both.
        deadline = time.monotonic() + 30
        while (mirror.items() != expected or not mirror.healthy.is_set()) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mirror.items() == expected, "the mirror missed writes"
        assert mirror.healthy.is_set(), "its watch runs again"
        kv.put(f"{prefix}after", b"w")  # and delivers: a write after the re-sync arrives
        deadline = time.monotonic() + 10
        while mirror.get("after") != b"w" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mirror.get("after") == b"w", "the re-made watch delivers new writes"
        report(f"[{ha.kind}] etcd member {member.name} killed: {len(expected)} writes, the mirror "
               f"whole again; all writes done {moved_s:.1f}s after the kill")
    finally:
        mirror.close()
        kv.close()
        member.start()


# -- switching queue types -------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_switching_to_quorum_is_refused_clearly_until_migrate_queues_keeps_the_messages(
    ha: HaBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    from droplet.broker_config.names import QueueNames
    from droplet.broker_config.topology import retry_topology, shared_topology
    from droplet.cli.migrate import run_migrate
    from droplet.errors import QueueArgumentsError
    from droplet.runtime import broker_factory

    quorum = ha.settings()
    classic = quorum.with_(queue_type="classic")
    names = QueueNames.of(classic)
    with closing(broker_factory(classic, "test-classic")()) as conn:
        conn.declare(shared_topology(names))
        conn.declare(retry_topology(names, 1000))
        confirmed: list[bool] = []
        for i in range(3):
            conn.publish(names.calls, b"m%d" % i, on_confirm=confirmed.append, priority=i)
        while len(confirmed) < 3:
            conn.poll(0.05)
    with closing(broker_factory(quorum, "test-quorum")()) as conn, \
            pytest.raises(QueueArgumentsError, match=r"queue_type.*migrate-queues"):
        conn.declare(shared_topology(QueueNames.of(quorum)))
    assert run_migrate(quorum) == 0
    migrated = capsys.readouterr().out
    with closing(broker_factory(quorum, "test-quorum")()) as conn:
        conn.declare(shared_topology(QueueNames.of(quorum)))  # now accepted
        conn.declare(retry_topology(QueueNames.of(quorum), 1000))
        assert conn.queue_depth(names.calls) == 3, migrated
    types = ha.queue_types()
    for queue in (names.calls, names.admin, names.work, names.dead, names.retry(1000)):
        assert types[queue] == "quorum", queue
    assert not any(name.endswith(".migrating") for name in types)
    print(migrated)


# -- the fleet under faults ------------------------------------------------------------------

CALLS = 500


class Load:
    """Calls submitted by one client, checked at the end."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name
        self.futures: list[tuple[int, Any]] = []

    def submit(self, count: int) -> None:
        start = len(self.futures)
        self.futures += [(i, self.client.call(self.name, i)) for i in range(start, start + count)]

    def check(self, what: str, fault_at: float) -> None:
        """Every call's correct result, one outcome per call (what the client got is what is
        stored), every call ran; prints the figures."""
        from droplet.store.serializer import load

        results = {i: future.get(timeout=120) for i, future in self.futures}
        recovered_s = time.monotonic() - fault_at
        calls = len(self.futures)
        assert [results[i][0] for i in range(calls)] == [i * 3 for i in range(calls)]
        different = 0
        for i, future in self.futures:
            stored = self.client.values.outcome(future.call_id)
            assert stored is not None, f"call {i} has no stored outcome"
            different += load(stored) != results[i]
        runs = count_runs(self.client, self.name)
        assert set(runs) == set(range(calls)), "every call ran"
        reruns = sum(runs.values()) - calls
        assert different == 0, f"{different} calls answered otherwise than their outcome"
        assert self.client.call(self.name, 10_000).get(timeout=60)[0] == 30_000, "whole again"
        report(f"{what}: {calls} calls, {len(results)} completed, 0 lost, {different} "
               f"second outcomes, {reruns} re-runs, all results {recovered_s:.1f}s after the "
               "fault began")


def _kill_under_load(load: Load, node: Any, what: str) -> None:
    """Kills `node` with CALLS calls in flight, checks them all, and starts it again."""
    load.submit(CALLS)
    time.sleep(0.3)
    fault_at = time.monotonic()
    node.kill()
    try:
        load.check(what, fault_at)
    finally:
        node.start()


@pytest.fixture
def fleet(ha: HaBackend, tmp_path: Path) -> Iterator[tuple[Fleet, Load]]:
    """A scheduler, two workers and a client on both clusters, with a registered function."""
    import droplet

    settings = ha.settings(worker_lease_ttl_s=3, status_interval_s=0.5, broker_heartbeat_s=3)
    started = ha.start_fleet(settings, tmp_path, workers=2)
    try:
        with droplet.connect(settings=settings) as client:
            name = f"u{uuid.uuid4().hex[:8]}"
            register_recording(client, name, name_the_run=True)
            yield started, Load(client, name)
    finally:
        started.stop()


@pytest.mark.timeout(360)
def test_killing_the_rabbitmq_node_the_workers_use_loses_no_call(
    ha: HaBackend, fleet: tuple[Fleet, Load]
) -> None:
    _, load = fleet
    node = ha.rabbit_node_of("droplet-worker")
    _kill_under_load(load, node, f"[{ha.kind}] RabbitMQ node {node.name} killed, the workers' node")


@pytest.mark.timeout(360)
def test_killing_the_clients_node_its_replies_arrive_on_its_new_connection(
    ha: HaBackend, fleet: tuple[Fleet, Load]
) -> None:
    """The client on another node than the fleet: its node dies with 500 calls in flight,
    the workers' connections live on. Replies to its old reply queue are dropped (with direct
    reply-to, RabbitMQ 3.10 would close each worker's connection instead, at every
    redelivery); the client reconnects to a third node, sends its unanswered calls again and
    gets every answer there."""
    import droplet

    started, first = fleet
    fleet_node = ha.rabbit_node_of("droplet-worker")
    others = [node for node in ha.rabbit_nodes if node != fleet_node]
    # A first connection follows the list: the client is on others[0], the fleet is not.
    urls = ",".join(node.address for node in [*others, fleet_node])
    with droplet.connect(settings=started.settings.with_(broker_url=urls)) as client:
        _kill_under_load(Load(client, first.name), others[0],
                         f"[{ha.kind}] RabbitMQ node {others[0].name} killed, the client's")


@pytest.mark.timeout(360)
def test_killing_the_etcd_leader_loses_no_call(ha: HaBackend, fleet: tuple[Fleet, Load]) -> None:
    _, load = fleet
    leader = ha.etcd_leader()
    _kill_under_load(load, leader, f"[{ha.kind}] etcd leader {leader.name} killed")


@pytest.mark.timeout(360)
def test_a_worker_cut_off_past_its_lease_has_its_calls_placed_again_and_no_second_outcome(
    ha: HaBackend, fleet: tuple[Fleet, Load]
) -> None:
    """The worker is cut off (local processes: SIGSTOP; containers: its container leaves the
    network): its lease (3 s) expires and the broker drops its silent connection (heartbeat
    3 s), so its queue and unacked calls are handed to the other worker; all calls complete
    while it is still cut off. Then it is back: it finishes or drops what it had in hand, and
    the outcomes stay the first ones."""
    started, load = fleet
    load.submit(CALLS)
    time.sleep(0.5)
    fault_at = time.monotonic()
    how = started.cut(0)
    try:
        _until(lambda: _fleet_size(started, load) == started.worker_count - 1,
               "the cut-off worker's lease expired: it left the fleet")
        done = [future.get(timeout=120) for _, future in load.futures]
        cut_s = time.monotonic() - fault_at
        assert len(done) == CALLS
    finally:
        started.reconnect(0)
    rejoined_s = _until(lambda: _fleet_size(started, load) == started.worker_count,
                        "the worker rejoined the fleet")
    time.sleep(3)  # it settles what it held
    assert started.running(0), "the rejoined worker runs on"
    load.check(f"[{ha.kind}] {how} {cut_s:.1f}s (lease 3 s), back in the fleet "
               f"{rejoined_s:.1f}s after", fault_at)


def _fleet_size(started: Fleet, load: Load) -> int:
    from droplet.signing import Signer
    from droplet.store.metadata import Metadata

    settings = started.settings
    return len(Metadata(load.client.kv, settings, Signer(settings.signing_key)).workers())


def _until(condition: Any, what: str, timeout_s: float = 60) -> float:
    """Polls condition() until true; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s:g}s: {what}")


@pytest.mark.timeout(600)
def test_a_rolling_restart_of_every_node_of_both_clusters_loses_no_call(
    ha: HaBackend, fleet: tuple[Fleet, Load]
) -> None:
    _, load = fleet
    stop = threading.Event()
    lock = threading.Lock()

    def submit() -> None:
        while not stop.wait(0.25):
            with lock:
                load.submit(5)

    submitter = threading.Thread(target=submit, daemon=True)
    fault_at = time.monotonic()
    submitter.start()
    try:
        for node in ha.rabbit_nodes:
            node.restart()
        for member in ha.etcd_members:
            member.restart()
            ha.etcd_leader()
    finally:
        stop.set()
        submitter.join()
    load.check(f"[{ha.kind}] rolling restart of 3 RabbitMQ nodes and 3 etcd members "
               f"({time.monotonic() - fault_at:.0f}s)", fault_at)
