"""The README's guarantees, each tried the way a user would break it (scenarios of the issue
"Guarantees that hold"): stale results, lost updates, results held back, busy workers handed
calls, large MULTI commits, results that cannot be loaded, and what waits unacked.

Each test checks causes, not elapsed time: what ran, on which worker, and what was stored.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import droplet
from droplet.broker_config.names import QueueNames
from droplet.runtime import broker_factory
from tests.conftest import client_fixture, cluster_fixture

pytestmark = pytest.mark.e2e

guarantee_cluster = cluster_fixture(workers=3, status_interval_s=0.5)
gclient = client_fixture("guarantee_cluster")


def _one_step_dag(client: Any, name: str, fn: Any) -> str:
    client.register(fn, name)
    assert client.register_dag(name + "-dag", [name], []) == (True, None)
    return name + "-dag"


def test_an_output_key_future_gets_its_own_calls_result_never_an_earlier_one(
    gclient: Any, unique: str
) -> None:
    """A future for a call with a reused output key must not take whatever the key holds:
    a slow second call returns its own result (stored and direct alike)."""

    def slow_square(lib: Any, x: int, delay: float) -> int:
        import time as t

        t.sleep(delay)
        return x * x

    dag = _one_step_dag(gclient, unique, slow_square)
    try:
        fn = unique
        assert gclient.call_dag(dag, {fn: [2, 0]}, output_key=unique + "-out").get(10) == 4
        slow = gclient.call_dag(dag, {fn: [3, 3.0]}, output_key=unique + "-out")
        assert slow.get(timeout=20) == 9
        assert gclient.get_object(unique + "-out") == 9
        direct = gclient.call_dag(dag, {fn: [5, 3.0]}, output_key=unique + "-out",
                                  direct_response=True, timeout=20)
        assert direct == 25
    finally:
        gclient.delete_dag(dag)


def test_concurrent_multi_withdrawals_lose_no_update(gclient: Any, unique: str) -> None:
    """Ten MULTI calls read one balance, sleep, and write it less ten, all at once: each that
    reports success took ten off, each that reports CONFLICT took nothing."""

    def withdraw(lib: Any, key: str, marker: str) -> int:
        import time as t

        balance = int(lib.get(key))
        t.sleep(0.2)
        lib.put_many({key: balance - 10, marker: 1})
        return balance - 10

    dag = _one_step_dag(gclient, unique, withdraw)
    key = unique + "-balance"
    gclient.put_object(key, 1000)
    outcomes: dict[int, Any] = {}

    def one(i: int) -> None:
        with droplet.connect(settings=gclient.settings) as c:
            try:
                outcomes[i] = c.call_dag(dag, {unique: [key, f"{unique}-m{i}"]},
                                         consistency=droplet.MULTI).get(timeout=90)
            except droplet.ConflictError as exc:
                outcomes[i] = exc

    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        gclient.delete_dag(dag)
    assert len(outcomes) == 10, "every call has an outcome"
    succeeded = [i for i, o in outcomes.items() if not isinstance(o, Exception)]
    markers = [i for i in range(10) if gclient.get_object(f"{unique}-m{i}") is not None]
    assert sorted(succeeded) == markers, "a call's writes were applied exactly when it succeeded"
    assert gclient.get_object(key) == 1000 - 10 * len(succeeded)
    assert succeeded, "at least one withdrawal went through"
    print(f"MULTI withdrawals: {len(succeeded)} of 10 committed, "
          f"{10 - len(succeeded)} CONFLICT, final balance {gclient.get_object(key)}")


def test_a_result_is_answered_as_soon_as_its_call_is_done(gclient: Any, unique: str) -> None:
    """Twenty calls to a one-second DAG step pinned on one worker: the first answer comes
    while most steps have not run yet (nothing waits for the rest of a batch)."""

    def step(lib: Any, i: int, prefix: str) -> int:
        import time as t

        t.sleep(1.0)
        lib.put(f"{prefix}{i}", 1)
        return i

    dag = _one_step_dag(gclient, unique, step)
    prefix = unique + "-ran-"
    try:
        futures = [gclient.call_dag(dag, {unique: [i, prefix]}) for i in range(20)]
        deadline = time.monotonic() + 60
        first = None
        while first is None and time.monotonic() < deadline:
            for future in futures:  # (a sweep of 0.2 s: the first answer is seen soon)
                try:
                    first = future.get(timeout=0.01)
                    break
                except droplet.DropletTimeoutError:
                    continue
        assert first is not None
        ran = sum(gclient.get_object(f"{prefix}{i}") is not None for i in range(20))
        # One step a second: a loaded host may let a third finish before this count.
        assert ran <= 3, f"the first answer waited for {ran} of 20 steps"
        assert sorted(f.get(timeout=60) for f in futures) == list(range(20))
    finally:
        gclient.delete_dag(dag)


def test_a_worker_busy_with_a_dag_step_is_not_handed_plain_calls(
    gclient: Any, unique: str
) -> None:
    """While one worker runs a long DAG step, plain calls all go to the idle workers and all
    finish before the step does."""

    def long_step(lib: Any, key: str) -> str:
        import time as t

        lib.put(key + "-busy", lib.getid())
        t.sleep(4)
        lib.put(key + "-done", 1)
        return lib.getid()

    dag = _one_step_dag(gclient, unique, long_step)
    key = unique + "-k"
    whoami = gclient.register(lambda lib: lib.getid(), unique + "-who")
    try:
        step = gclient.call_dag(dag, {unique: [key]})
        deadline = time.monotonic() + 20
        while (busy := gclient.get_object(key + "-busy")) is None:
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.05)
        ran_on = [whoami().get(timeout=20) for _ in range(12)]
        assert gclient.get_object(key + "-done") is None, "the calls finished during the step"
        assert busy not in ran_on, "no plain call went to the busy worker"
        assert step.get(timeout=20) == busy
    finally:
        gclient.delete_dag(dag)


def test_a_multi_call_writing_a_hundred_keys_commits_and_one_too_large_fails_clearly(
    gclient: Any, unique: str
) -> None:
    def write_many(lib: Any, prefix: str, n: int) -> int:
        lib.put_many({f"{prefix}{i}": i for i in range(n)})
        return n

    dag = _one_step_dag(gclient, unique, write_many)
    try:
        args = {unique: [unique + "-a", 100]}
        assert gclient.call_dag(dag, args, consistency=droplet.MULTI).get(timeout=30) == 100
        assert gclient.get_object(unique + "-a99") == 99
        with pytest.raises(droplet.InvalidRequestError, match="etcd_max_txn_ops"):
            gclient.call_dag(dag, {unique: [unique + "-b", 300]},
                             consistency=droplet.MULTI).get(timeout=30)
        assert gclient.get_object(unique + "-b0") is None, "all or nothing"
    finally:
        gclient.delete_dag(dag)


def test_an_upstream_result_that_cannot_be_loaded_fails_the_call_with_its_reason(
    gclient: Any, unique: str
) -> None:
    def make(lib: Any) -> Any:
        class Unloadable:
            def __init__(self) -> None:
                self.state = 1

            def __setstate__(self, state: Any) -> None:
                raise ValueError("this object refuses to be loaded")

        return Unloadable()

    gclient.register(make, unique + "-make")
    gclient.register(lambda lib, x: "never", unique + "-use")
    dag = unique + "-dag"
    assert gclient.register_dag(dag, [unique + "-make", unique + "-use"],
                                [(unique + "-make", unique + "-use")]) == (True, None)
    try:
        with pytest.raises(droplet.ExecutionError, match="cannot load an upstream result"):
            gclient.call_dag(dag, {}).get(timeout=20)
    finally:
        gclient.delete_dag(dag)


def test_a_message_nobody_receives_waits_ready_in_its_inbox_not_unacked(
    gclient: Any, unique: str
) -> None:
    """Inbox messages wait in their queue until a function asks (lib.recv), so none is held
    unacked into the broker's consumer timeout."""
    whoami = gclient.register(lambda lib: lib.getid(), unique + "-who")
    target = whoami().get(timeout=10)
    gclient.register(lambda lib, to: lib.send(to, "hello"), unique + "-send")
    gclient.call(unique + "-send", target).get(timeout=10)
    names = QueueNames(gclient.settings.namespace)
    conn = broker_factory(gclient.settings, "inspect")()
    try:
        assert conn.queue_depth(names.inbox(target)) == 1, "ready in the queue"
    finally:
        conn.close()
    gclient.register(lambda lib: lib.recv(timeout=5), unique + "-recv")
    received: list[Any] = []
    for _ in range(30):
        received += gclient.call(unique + "-recv").get(timeout=20)
        if received:
            break
    assert [m for _, m in received] == ["hello"]


def test_a_session_reads_its_own_multi_writes_on_any_worker(gclient: Any, unique: str) -> None:
    """The answer to a MULTI call carries the revision of its commit, so the session's next
    read, wherever it runs, is at least that fresh."""

    def write(lib: Any, key: str, value: int) -> str:
        lib.put(key, value)
        return lib.getid()

    def read(lib: Any, key: str) -> Any:
        return lib.getid(), lib.get(key)

    write_dag = _one_step_dag(gclient, unique + "-w", write)
    read_dag = _one_step_dag(gclient, unique + "-r", read)
    key = unique + "-k"
    try:
        for i in range(15):
            writer = gclient.call_dag(write_dag, {unique + "-w": [key, i]},
                                      consistency=droplet.MULTI, client_id=unique).get(20)
            reader, seen = gclient.call_dag(read_dag, {unique + "-r": [key]},
                                            client_id=unique).get(20)
            assert reader != writer
            assert seen == i, f"the session read {seen} after writing {i}"
    finally:
        gclient.delete_dag(write_dag)
        gclient.delete_dag(read_dag)
