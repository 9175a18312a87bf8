"""A signed fleet against someone who can write to etcd or publish to the broker: planted
pickles, function bodies copied to another name or restored from an older registration, and
captured admin requests replayed. Nothing of theirs runs; every refusal is clear."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import droplet
from droplet.broker.interface import QueueSpec, Topology
from droplet.broker_config.names import QueueNames
from droplet.proto import envelope, pb
from droplet.runtime import broker_factory, open_kv
from droplet.signing import Signer
from droplet.store import serializer
from droplet.store.keys import StoreKeys
from tests.conftest import Cluster, cluster_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

SECRET = "fleet-secret-for-store-tests"

signed_store_cluster = cluster_fixture(workers=2, signing_key=SECRET, status_interval_s=0.5,
                                       admin_max_age_s=5)


class Planted:
    """A pickle that creates a file when it is loaded: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def _plant(settings: Any, key: str, path: Path) -> None:
    value = serializer.dump(Planted(str(path)))
    kv = open_kv(settings)
    try:
        kv.put(StoreKeys(settings.etcd_prefix).value(key), value.SerializeToString())
    finally:
        kv.close()


def test_a_pickle_written_straight_into_etcd_never_runs(
    signed_store_cluster: Cluster, unique: str, tmp_path: Path
) -> None:
    settings = signed_store_cluster.settings
    marker = tmp_path / "pwned"
    _plant(settings, unique, marker)
    with droplet.connect(settings=settings) as c:
        echo = c.register(lambda lib, x: repr(x), unique + "-echo")
        with pytest.raises(droplet.DropletError):
            echo(droplet.DropletReference(unique)).get(timeout=20)
        c.register(lambda lib, k: repr(lib.get(k)), unique + "-get")
        with pytest.raises(droplet.DropletError):
            c.call(unique + "-get", unique).get(timeout=20)
        with pytest.raises(droplet.SignatureError):
            c.get_object(unique)
        assert echo(1).get(timeout=10) == "1", "the fleet keeps serving"
    assert not marker.exists(), "the planted pickle was never loaded"


def test_a_function_body_copied_to_another_name_or_restored_is_refused(
    signed_store_cluster: Cluster, unique: str, tmp_path: Path
) -> None:
    settings = signed_store_cluster.settings
    keys = StoreKeys(settings.etcd_prefix)
    kv = open_kv(settings)
    try:
        with droplet.connect(settings=settings) as c:
            c.register(lambda lib: "I am a", unique + "-a")
            c.register(lambda lib: "I am b, version 1", unique + "-b")
            old_b = kv.get(keys.function(unique + "-b"))
            c.register(lambda lib: "I am b, version 2", unique + "-b")
            assert c.call(unique + "-b").get(timeout=10) == "I am b, version 2"

            kv.put(keys.function(unique + "-b"), kv.get(keys.function(unique + "-a")) or b"")
            with pytest.raises(droplet.DropletError, match="signature"):
                c.call(unique + "-b").get(timeout=20)

            kv.put(keys.function(unique + "-b"), old_b or b"")
            with pytest.raises(droplet.DropletError, match="signature"):
                c.call(unique + "-b").get(timeout=20)

            kv.delete(keys.function(unique + "-b"))  # and re-created from version 1
            kv.put(keys.function(unique + "-b"), old_b or b"")
            with pytest.raises(droplet.DropletError, match="signature"):
                c.call(unique + "-b").get(timeout=20)
            assert c.call(unique + "-a").get(timeout=10) == "I am a"
    finally:
        kv.close()


def test_a_captured_admin_request_replayed_changes_nothing(
    signed_store_cluster: Cluster, unique: str
) -> None:
    """A delete_dag captured off the wire: replayed at once it gets its first answer and
    deletes nothing new; replayed after admin_max_age_s it is refused outright."""
    settings = signed_store_cluster.settings
    names = QueueNames(settings.namespace)
    signer = Signer(SECRET)
    with droplet.connect(settings=settings) as c:
        c.register(lambda lib: 1, unique)
        dag = unique + "-dag"

        def exists() -> bool:
            return c.metadata.get_dag(dag) is not None

        assert c.register_dag(dag, [unique], []) == (True, None)
        captured = envelope.encode([pb.Message(delete_dag=pb.DeleteDag(name=dag))], signer,
                                   nonce=unique + "-request")
        conn = broker_factory(settings, "attacker")()
        try:
            conn.publish(names.admin, captured)
            conn.poll(0.2)
            _wait(lambda: not exists(), "the first delete")
            assert c.register_dag(dag, [unique], []) == (True, None)
            conn.publish(names.admin, captured)  # replayed at once
            conn.poll(0.2)
            time.sleep(1.5)
            assert exists(), "the replay was answered, not run again"
            time.sleep(settings.admin_max_age_s)
            dead_before = conn.queue_depth(names.dead) or 0
            conn.publish(names.admin, captured)  # replayed too late
            conn.poll(0.2)
            _wait(lambda: (conn.queue_depth(names.dead) or 0) > dead_before, "its refusal")
            assert exists()
        finally:
            conn.close()
        assert c.delete_dag(dag) == (True, None), "the owner's own delete works"


def _wait(condition: Any, what: str = "condition") -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met in time"
        time.sleep(0.1)


def test_replies_to_unverified_messages_go_unsigned_and_only_to_reply_addresses(
    signed_store_cluster: Cluster, unique: str
) -> None:
    """A forged call naming a real queue as its reply address gets no signed message into
    that queue (nothing a trusted consumer of it would believe)."""
    settings = signed_store_cluster.settings
    names = QueueNames(settings.namespace)
    trap = f"{settings.namespace}.trap-{unique}"
    forged = pb.FunctionCall(name=unique, call_id=unique, response_key=unique,
                             response_address=trap)
    conn = broker_factory(settings, "forger")()
    try:
        conn.declare(Topology(queues=[QueueSpec(trap, durable=False, auto_delete=True)]))
        before = conn.queue_depth(names.dead) or 0
        conn.publish(names.work, envelope.encode([pb.Message(call=forged)], Signer(None)))
        conn.poll(0.2)
        _wait(lambda: (conn.queue_depth(names.dead) or 0) > before, "dead-lettering")
        time.sleep(0.5)
        assert conn.queue_depth(trap) == 0, "nothing reflected into a real queue"
    finally:
        conn.close()
