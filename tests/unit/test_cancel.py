"""Cancel without a broker: the write-once race, the worker's skip, the interruption."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pytest

from droplet.client.cancel import cancel_call, is_cancelled
from droplet.errors import InvalidArgumentError
from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.store.commits import Committer, Status
from droplet.store.memory import MemoryKV
from droplet.store.values import ValueStore
from droplet.worker import handlers
from droplet.worker.cancel import Cancellations
from droplet.worker.executor import run_function

from .helpers import SETTINGS, commit, create_function, function_call, metadata, worker_state


def _cancel(kv: MemoryKV, call_id: str) -> bool:
    values = ValueStore(kv, SETTINGS)
    committer = Committer(values, SETTINGS.etcd_max_txn_ops)
    return cancel_call(committer, values.keys, call_id, SETTINGS.cancel_keep_s)


def test_a_cancel_after_the_finish_changes_nothing_and_says_so() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, x: x + 1, "incr")
    out = Outbox()
    handlers.exec_function(function_call("incr", [1]), worker_state(kv), out)
    [done] = commit(kv, out)
    assert done.status is Status.DONE
    assert _cancel(kv, "resp-key") is False
    assert not is_cancelled(ValueStore(kv, SETTINGS).outcome("resp-key"))


def test_a_finish_after_the_cancel_answers_cancelled() -> None:
    """The worker ran it anyway (it took the call before the cancel reached it): its commit
    loses the write-once race and its answer carries the stored CANCELLED."""
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, x: x + 1, "incr")
    assert _cancel(kv, "resp-key") is True
    assert _cancel(kv, "resp-key") is True, "cancelling again: still cancelled"
    call = function_call("incr", [1])
    call.response_address = "client"
    out = Outbox()
    handlers.exec_function(call, worker_state(kv), out)  # no mirror: it runs
    [lost] = commit(kv, out)
    assert lost.status is Status.DUPLICATE and is_cancelled(lost.existing)


def test_a_worker_that_knows_the_cancel_does_not_run_the_call() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), lambda lib, x: lib.put(f"ran-{x}", x), "record")
    state = worker_state(kv)
    state.cancels = Cancellations().start(kv, state.keys.cancels)
    try:
        assert _cancel(kv, "resp-key") is True
        out = Outbox()
        value = handlers.exec_function(function_call("record", [1]), state, out)
        assert is_cancelled(value) and kv.get(state.keys.value("ran-1")) is None
        other = Outbox()
        handlers.exec_function(function_call("record", [2], "other-call"), state, other)
        assert kv.get(state.keys.value("ran-2")) is not None, "other calls run"
    finally:
        state.cancels.close()


def test_a_sleeping_function_is_interrupted_when_its_cancel_arrives() -> None:
    kv = MemoryKV()
    keys = worker_state(kv).keys
    cancels = Cancellations().start(kv, keys.cancels)  # pytest runs tests on the main thread
    finished: list[bool] = []

    def sleepy(_lib: Any) -> None:
        with contextlib.suppress(Exception):  # a cancel is no Exception: not caught
            time.sleep(30)
        finished.append(True)

    threading.Timer(0.2, lambda: _cancel(kv, "c1")).start()
    started = time.monotonic()
    value, _ = run_function(sleepy, None, [], 0.0, cancels.interruptible("c1"))
    cancels.settle()
    cancels.close()
    assert time.monotonic() - started < 5
    assert is_cancelled(value) and finished == []
    assert cancels.deadline() is None, "nothing left for the keeper to hard-kill"


def test_a_cancel_of_another_call_does_not_interrupt() -> None:
    kv = MemoryKV()
    cancels = Cancellations().start(kv, worker_state(kv).keys.cancels)
    threading.Timer(0.1, lambda: _cancel(kv, "someone-else")).start()
    value, _ = run_function(lambda _lib: time.sleep(0.4) or "done", None, [], 0.0,
                            cancels.interruptible("mine"))
    cancels.close()
    assert value.type != pb.ERROR


@pytest.mark.parametrize("bad", ["", "a/b", "x" * 300, None, 3])
def test_bad_call_ids_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        _cancel(MemoryKV(), bad)
