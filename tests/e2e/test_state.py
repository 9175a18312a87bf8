"""Stateful functions end to end: the user library, messages between functions, nested calls,
MULTI snapshots (the anomaly test) and client_id sessions."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import droplet
from tests.conftest import client_fixture, cluster_fixture

pytestmark = pytest.mark.e2e


state_cluster = cluster_fixture(workers=4, status_interval_s=0.5)
sclient = client_fixture("state_cluster")


def test_every_store_call_of_the_library(sclient: Any, unique: str) -> None:
    def use_store(lib: Any, prefix: str) -> Any:
        lib.put(prefix + "one", 1)
        lib.put_many({prefix + "two": 2, prefix + "three": 3})
        many = lib.get([prefix + "one", prefix + "two", prefix + "nope"])
        lib.delete(prefix + "one")
        return lib.getid(), many, lib.get(prefix + "one")

    worker_id, many, deleted = sclient.register(use_store, unique)(unique).get(timeout=20)
    assert many == {unique + "one": 1, unique + "two": 2, unique + "nope": None}
    assert deleted is None
    assert isinstance(worker_id, str) and worker_id
    assert sclient.get_objects([unique + "one", unique + "two", unique + "three"]) == {
        unique + "one": None, unique + "two": 2, unique + "three": 3,
    }
    sclient.put_objects({unique + "x": "x", unique + "y": "y"})
    assert sclient.get_objects([unique + "x", unique + "y"]) == {
        unique + "x": "x", unique + "y": "y",
    }


def test_messages_between_functions_on_different_workers(sclient: Any, unique: str) -> None:
    def receiver(lib: Any, key: str) -> Any:
        lib.put(key, lib.getid())
        got: list[Any] = []
        deadline = __import__("time").monotonic() + 20
        while len(got) < 3 and __import__("time").monotonic() < deadline:
            got += lib.recv(timeout=1.0)
        return lib.getid(), got

    def sender(lib: Any, destination: str, items: list[Any]) -> str:
        for item in items:
            lib.send(destination, item)
        return lib.getid()

    rx = sclient.register(receiver, unique + "-rx")
    tx = sclient.register(sender, unique + "-tx")
    inbox_key = unique + "-rx-id"
    receiving = rx(inbox_key)
    deadline = time.monotonic() + 20
    while (destination := sclient.get_object(inbox_key)) is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sender_id = tx(destination, [1, {"two": 2}, "three"]).get(timeout=20)
    receiver_id, messages = receiving.get(timeout=30)
    assert receiver_id == destination != sender_id
    assert messages == [(sender_id, 1), (sender_id, {"two": 2}), (sender_id, "three")]


def test_a_message_waits_while_its_receiver_is_busy(sclient: Any, unique: str) -> None:
    sclient.register(lambda lib: lib.getid(), unique + "-id")
    sclient.register(lambda lib, to, m: lib.send(to, m), unique + "-send")
    sclient.register(lambda lib: lib.recv(timeout=5), unique + "-recv")
    target = sclient.call(unique + "-id").get(timeout=10)
    sclient.call(unique + "-send", target, "kept for later").get(timeout=10)
    received: list[Any] = []
    for _ in range(20):  # the next recv that runs on that worker gets it
        result = sclient.call(unique + "-recv").get(timeout=20)
        received += result
        if received:
            break
    assert [m for _, m in received] == ["kept for later"]


def test_bad_use_of_messages_is_a_clear_error_in_the_caller(sclient: Any, unique: str) -> None:
    import threading as th

    sclient.register(lambda lib, to: lib.send(to, "x"), unique + "-nowhere")
    with pytest.raises(droplet.ExecutionError, match="no live worker"):
        sclient.call(unique + "-nowhere", "ghost-worker-1").get(timeout=20)
    sclient.register(lambda lib: lib.send(lib.getid(), th.Lock()), unique + "-lock")
    with pytest.raises(droplet.ExecutionError, match="cannot serialize"):
        sclient.call(unique + "-lock").get(timeout=20)
    assert sclient.register(lambda lib: "fine", unique + "-ok")().get(timeout=10) == "fine"


def test_lib_call_starts_another_function(sclient: Any, unique: str) -> None:
    sclient.register(lambda lib, x: x * x, unique + "-square")

    def outer(lib: Any, inner: str, x: int) -> Any:
        handle = lib.call(inner, x + 1)
        return handle.get(timeout=20) + 1

    assert sclient.register(outer, unique)(unique + "-square", 3).get(timeout=30) == 17


def _register_pair_dag(client: Any, unique: str) -> str:
    def read_a(lib: Any, prefix: str) -> Any:
        import time as t

        a = lib.get(prefix + "a")
        t.sleep(0.002)
        return a

    def read_b(lib: Any, prefix: str, a: Any) -> Any:
        return a, lib.get(prefix + "b")

    client.register(read_a, unique + "-ra")
    client.register(read_b, unique + "-rb")
    dag = unique + "-pair"
    assert client.register_dag(dag, [unique + "-ra", unique + "-rb"],
                               [(unique + "-ra", unique + "-rb")]) == (True, None)
    return dag


def test_multi_reads_one_snapshot_the_anomaly_test(sclient: Any, unique: str) -> None:
    """A writer sets a and b to the same new number in one transaction, hundreds of times,
    while two-function DAGs read a in the first function and b in the second."""
    dag = _register_pair_dag(sclient, unique)
    sclient.put_objects({unique + "a": 0, unique + "b": 0})
    stop = threading.Event()
    writes = [0]

    def writer() -> None:
        with droplet.connect(settings=sclient.settings) as w:
            n = 0
            while not stop.is_set():
                n += 1
                w.put_objects({unique + "a": n, unique + "b": n})
        writes[0] = n

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        args = {unique + "-ra": [unique], unique + "-rb": [unique]}
        normal = [sclient.call_dag(dag, args, direct_response=True, timeout=20)
                  for _ in range(150)]
        multi = [sclient.call_dag(dag, args, direct_response=True, timeout=20,
                                  consistency=droplet.MULTI) for _ in range(150)]
    finally:
        stop.set()
        thread.join(timeout=10)
        sclient.delete_dag(dag)
    mixed_normal = sum(a != b for a, b in normal)
    mixed_multi = sum(a != b for a, b in multi)
    print(f"anomaly test: {writes[0]} atomic writes of (a, b); mixed pairs: NORMAL "
          f"{mixed_normal}/150, MULTI {mixed_multi}/150")
    assert writes[0] > 100, "the writer kept writing during the test"
    assert mixed_multi == 0
    assert len({a for a, _ in multi}) > 1, "MULTI calls saw the writer progress"


def test_multi_writes_become_visible_together_at_the_end(sclient: Any, unique: str) -> None:
    def write_one(lib: Any, prefix: str) -> Any:
        lib.put(prefix + "p", "P")
        return lib.get(prefix + "p")  # its own write

    def write_two(lib: Any, prefix: str, seen: Any) -> Any:
        lib.put(prefix + "q", "Q")
        return seen, lib.get(prefix + "p"), lib.get(prefix + "q")

    sclient.register(write_one, unique + "-w1")
    sclient.register(write_two, unique + "-w2")
    dag = unique + "-writes"
    assert sclient.register_dag(dag, [unique + "-w1", unique + "-w2"],
                                [(unique + "-w1", unique + "-w2")])[0]
    try:
        result = sclient.call_dag(
            dag, {unique + "-w1": [unique], unique + "-w2": [unique]},
            consistency=droplet.MULTI,
        ).get(timeout=20)
        assert result == ("P", "P", "Q"), "each function reads the call's own writes"
        assert sclient.get_objects([unique + "p", unique + "q"]) == {
            unique + "p": "P", unique + "q": "Q",
        }
    finally:
        sclient.delete_dag(dag)


def test_a_client_session_reads_its_own_writes_across_workers(sclient: Any, unique: str) -> None:
    def write(lib: Any, key: str, value: Any) -> str:
        lib.put(key, value)
        return lib.getid()

    def read(lib: Any, key: str) -> Any:
        return lib.getid(), lib.get(key)

    sclient.register(write, unique + "-write")
    sclient.register(read, unique + "-read")
    for name in ("write", "read"):
        assert sclient.register_dag(f"{unique}-{name}-dag", [f"{unique}-{name}"], [])[0]
    key = unique + "-k"
    try:
        for i in range(20):
            writer_id = sclient.call_dag(
                f"{unique}-write-dag", {f"{unique}-write": [key, i]}, client_id="session-1",
            ).get(timeout=20)
            reader_id, seen = sclient.call_dag(
                f"{unique}-read-dag", {f"{unique}-read": [key]}, client_id="session-1",
            ).get(timeout=20)
            assert reader_id != writer_id, "the two calls ran on different workers"
            assert seen == i, "the session read its own write"
    finally:
        sclient.delete_dag(f"{unique}-write-dag")
        sclient.delete_dag(f"{unique}-read-dag")
