"""The worker's call recorder: what it remembers of each run, how it finds a run's call id, and
that what it publishes stays bounded and is written only when something changed."""

from __future__ import annotations

import pytest

from droplet.proto import pb
from droplet.proto.replies import error_value
from droplet.store import serializer
from droplet.store.keys import StoreKeys
from droplet.store.memory import MemoryKV
from droplet.worker import recorder as recorder_module
from droplet.worker.recorder import BUCKET_BOUNDS_S, TRACEBACK_CHARS, TRACEBACKS_KEPT, CallRecorder

KEYS = StoreKeys("/unit/")


def _recorder(limit: int = 200) -> tuple[CallRecorder, MemoryKV]:
    kv = MemoryKV()
    recorder = CallRecorder(kv, KEYS, limit=limit, interval_s=60)
    lease = kv.grant_lease(30).id
    recorder._worker_id, recorder._incarnation = "w1", "inc-1"
    recorder._lease = lambda: lease
    return recorder, kv


def test_a_stored_outcome_gives_its_run_the_call_id_and_a_store_time() -> None:
    recorder, _ = _recorder()
    first, second = serializer.dump(1), serializer.dump(2)
    recorder.after_run("f", 0.004, first)
    recorder.after_run("g", 0.001, second)
    recorder.after_outcome("call-2", second)
    recorder.after_outcome("call-1", first)
    recorder.after_outcome("call-x", serializer.dump(1))  # an equal value, not the same run
    calls = {c.function: c for c in recorder.record().calls}
    assert calls["f"].call_id == "call-1" and calls["g"].call_id == "call-2"
    assert calls["f"].stages.run_s == 0.004
    assert calls["f"].stages.HasField("store_s") and calls["f"].stages.store_s >= 0
    assert not calls["f"].stages.HasField("queue_wait_s"), "left for the tracer"
    assert [c.seq for c in recorder.record().calls] == [1, 2]


def test_a_run_whose_outcome_is_not_stored_here_keeps_no_call_id() -> None:
    recorder, _ = _recorder()
    recorder.after_run("step", 0.002, serializer.dump("x"))
    (call,) = recorder.record().calls
    assert call.call_id == "" and not call.stages.HasField("store_s")


def test_failures_keep_their_code_message_and_the_end_of_their_traceback() -> None:
    recorder, _ = _recorder()
    long_traceback = "Traceback (most recent call last):\n" + "x" * 20000 + "\nZeroDivisionError"
    recorder.after_run("oops", 0.001, error_value(pb.EXECUTION_ERROR, "ZeroDivisionError: no",
                                                  long_traceback, "ZeroDivisionError"))
    recorder.after_run("slow", 2.0, error_value(pb.TIMEOUT, "ran past its limit"))
    oops, slow = recorder.record().calls
    assert oops.status == pb.EXECUTION_ERROR and oops.error == "ZeroDivisionError: no"
    assert oops.exception_type == "ZeroDivisionError"
    assert len(oops.traceback) <= TRACEBACK_CHARS + 10
    assert oops.traceback.endswith("ZeroDivisionError")
    assert slow.status == pb.TIMEOUT


def test_the_record_is_bounded_in_calls_and_tracebacks() -> None:
    recorder, _ = _recorder(limit=50)
    for i in range(120):
        recorder.after_run("oops", 0.001, error_value(pb.EXECUTION_ERROR, f"e{i}", "tb " * 100))
    record = recorder.record()
    assert [c.error for c in record.calls] == [f"e{i}" for i in range(70, 120)]
    with_traceback = [c.error for c in record.calls if c.traceback]
    assert with_traceback == [f"e{i}" for i in range(120 - TRACEBACKS_KEPT, 120)]
    assert len(record.SerializeToString()) < 64 * 1024


def test_totals_count_every_run_with_a_latency_histogram() -> None:
    recorder, _ = _recorder(limit=5)
    for seconds in (0.0002, 0.003, 0.003, 400.0):
        recorder.after_run("f", seconds, serializer.dump(0))
    recorder.after_run("f", 0.01, error_value(pb.EXECUTION_ERROR, "bad"))
    (totals,) = recorder.record().totals
    assert (totals.function, totals.calls, totals.errors) == ("f", 5, 1)
    assert abs(totals.run_s - 400.0162) < 1e-9
    assert len(totals.buckets) == len(BUCKET_BOUNDS_S) + 1 and sum(totals.buckets) == 5
    assert totals.buckets[0] == 1 and totals.buckets[-1] == 1  # fastest and slowest bucket


def test_it_publishes_under_the_lease_only_when_something_changed() -> None:
    recorder, kv = _recorder()
    assert recorder.publish(), "a first record even with nothing run yet"
    assert not recorder.publish(), "nothing changed: no write"
    recorder.after_run("f", 0.001, serializer.dump(0))
    assert recorder.publish()
    raw = kv.get(KEYS.recent_calls("w1"))
    assert raw is not None
    record = pb.RecentCalls.FromString(raw)
    assert (record.worker_id, record.incarnation, len(record.calls)) == ("w1", "inc-1", 1)
    recorder._lease = lambda: None
    recorder.after_run("f", 0.001, serializer.dump(0))
    assert not recorder.publish(), "not registered (no lease): nothing is written"


def test_building_the_record_lets_go_of_the_gil_every_few_records(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Traced on the 2-core VM: the recorder thread built 200 records in one run of 1.0-1.3
    ms every interval, holding the GIL, and the worker's main thread, woken by a call, waited
    for all of it. It now yields (time.sleep(0)) every YIELD_EVERY records."""
    recorder, _ = _recorder(limit=200)
    for n in range(300):
        recorder.after_run("f", 0.001, serializer.dump(n))
    yields: list[float] = []
    monkeypatch.setattr(recorder_module.time, "sleep", yields.append)
    record = recorder.record()
    assert [c.seq for c in record.calls] == list(range(101, 301))
    assert yields == [0] * (200 // recorder_module.YIELD_EVERY)
