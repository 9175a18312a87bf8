"""Speculative DAG steps (MULTIEXEC) without a broker: where the scheduler places the copies,
and the race between copies that the worker decides once in etcd (worker/copies.py).

`settle` commits an outbox the way the message cycle does: a durable item's `then` is sent
only when its commit took effect, its `on_conflict` when its guard failed, nothing when the
race was taken; so each test sees what would really be published.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from droplet.graph import BEGIN, shape_error
from droplet.outbox import Outbox, Outgoing
from droplet.proto import pb
from droplet.proto.replies import error_value
from droplet.scheduler import dags as scheduler_dags
from droplet.store import serializer
from droplet.store.commits import Commit, Committer, Status
from droplet.store.memory import MemoryKV
from droplet.store.values import ValueStore
from droplet.worker import dags
from droplet.worker.cancel import Cancellations
from droplet.worker.executor import run_function
from droplet.worker.handlers import WorkerState

from .helpers import NAMES, SETTINGS, create_function, metadata, scheduler_state, worker_state


def settle(kv: MemoryKV, out: Outbox) -> tuple[list[Outgoing], list[pb.GenericResponse]]:
    """What an outbox publishes once committed: (messages, answers)."""
    committer = Committer(ValueStore(kv, SETTINGS), SETTINGS.etcd_max_txn_ops)
    sent = list(out.sent)
    answers = [r.response for r in out.replies]
    for item in out.durable:
        done = committer.apply(item.commit)
        if done.status is Status.DONE:
            sent += item.then
        elif done.status is Status.CONFLICT:
            sent += item.on_conflict
        if item.reply is not None and done.status in (Status.DONE, Status.DUPLICATE):
            answer = pb.GenericResponse()
            answer.CopyFrom(item.reply.response)
            if done.existing is not None:  # the call had an outcome: that one is answered
                answer.value.CopyFrom(done.existing)
            answers.append(answer)
    return sent, answers


def handle(kv: MemoryKV, state: WorkerState, t: pb.DagTrigger) -> Outbox:
    out = Outbox()
    dags.on_trigger(t, state, out)
    return out


def speculative_dag(copies: int = 2, invalid: list[Any] | None = None,
                    final: bool = False) -> pb.Dag:
    """spec -> after (spec speculative); with `final`, spec alone."""
    dag = pb.Dag(name="d", functions=["spec"] if final else ["spec", "after"])
    if not final:
        dag.connections.add(source="spec", sink="after")
    spec = dag.speculative.add(function="spec", copies=copies)
    for value in invalid if invalid is not None else [None]:
        serializer.dump(value, spec.invalid_results.add())
    return dag


def schedule_of(dag: pb.Dag, copies: list[str], direct: bool = False) -> pb.DagSchedule:
    schedule = pb.DagSchedule(id="s1", call_id="call-1", response_address="client",
                              direct_response=direct)
    schedule.dag.CopyFrom(dag)
    for f in dag.functions:
        schedule.locations[f] = f"w-{f}"
    serializer.dump(5, schedule.arguments["spec"].values.add())
    if copies:
        schedule.copy_places["spec"].workers.extend(copies)
    return schedule


def copy_trigger(schedule: pb.DagSchedule, copy: int) -> pb.DagTrigger:
    t = pb.DagTrigger(id=schedule.id, source=BEGIN, target_function="spec", copy=copy)
    t.schedule.CopyFrom(schedule)
    return t


def by_worker(lib: Any, x: int) -> Any:
    """The copy on w-spec (copy 0) returns None (invalid), the others a valid result; w-bad
    fails."""
    if lib.getid() == "w-bad":
        raise ValueError("this copy fails")
    return None if lib.getid() == "w-spec" else x * 2


def _kv_with(fn: Any = by_worker) -> MemoryKV:
    kv = MemoryKV()
    create_function(metadata(kv), fn, "spec")
    return kv


def _forwarded(sent: list[Outgoing]) -> list[pb.DagTrigger]:
    return [o.message.trigger for o in sent if o.queue == NAMES.worker("w-after")]


# -- the scheduler places the copies -------------------------------------------------------

def _scheduled(live: list[str], copies: int) -> Outbox:
    state = scheduler_state(*live)
    dag = speculative_dag(copies)
    state.dags["d"] = pb.DagRecord(dag=dag, ready=True)
    for w, f in (("w-spec", "spec"), ("w-after", "after")):
        state.pins[w] = pb.PinRecord(dag_name="d", function_name=f, worker_id=w)
    out = Outbox()
    response = scheduler_dags.call_dag(pb.DagCall(name="d", call_id="c"), "addr", state, out)
    assert response.success
    return out


def test_a_speculative_source_gets_one_begin_trigger_per_copy_on_distinct_workers() -> None:
    out = _scheduled(["w-spec", "w-after", "w-1", "w-2", "w-3"], copies=3)
    triggers = [o for o in out.sent if o.message.WhichOneof("kind") == "trigger"]
    assert sorted(t.message.trigger.copy for t in triggers) == [0, 1, 2]
    queues = [t.queue for t in triggers]
    assert len(set(queues)) == 3 and NAMES.worker("w-spec") in queues
    extra = list(triggers[0].message.trigger.schedule.copy_places["spec"].workers)
    assert set(extra) <= {"w-1", "w-2", "w-3"}, "unpinned workers are taken first"
    notices = [o.queue for o in out.sent if o.message.WhichOneof("kind") == "schedule"]
    extra_queues = {NAMES.worker(w) for w in extra}
    assert set(notices) == extra_queues, "each extra copy's worker, and only it, gets notice"


def test_fewer_live_workers_mean_fewer_copies() -> None:
    out = _scheduled(["w-spec", "w-after"], copies=4)
    triggers = [o for o in out.sent if o.message.WhichOneof("kind") == "trigger"]
    assert sorted(t.message.trigger.copy for t in triggers) == [0, 1]
    assert {t.queue for t in triggers} == {NAMES.worker("w-spec"), NAMES.worker("w-after")}


def test_a_speculative_function_with_two_upstreams_is_refused() -> None:
    dag = pb.Dag(name="d", functions=["a", "b", "j"])
    dag.connections.add(source="a", sink="j")
    dag.connections.add(source="b", sink="j")
    dag.speculative.add(function="j", copies=2)
    assert "several upstreams" in (shape_error(dag) or "")
    dag.speculative[0].function = "nope"
    assert "not a function of the DAG" in (shape_error(dag) or "")


# -- the race between copies ---------------------------------------------------------------

def test_copies_finishing_together_send_one_result_on() -> None:
    kv = _kv_with(lambda _, x: x * 2)
    schedule = schedule_of(speculative_dag(), ["w-1"])
    first, second = worker_state(kv, "w-spec"), worker_state(kv, "w-1")
    # Both run and read the race before either commits: the worst interleaving.
    out_a = handle(kv, first, copy_trigger(schedule, 0))
    out_b = handle(kv, second, copy_trigger(schedule, 1))
    sent_a, _ = settle(kv, out_a)
    sent_b, _ = settle(kv, out_b)
    forwarded = _forwarded(sent_a + sent_b)
    assert len(forwarded) == 1, "exactly one downstream trigger"
    assert serializer.load(forwarded[0].result) == 10 and forwarded[0].copy == 0


def test_an_invalid_result_does_not_win_and_a_valid_copy_does() -> None:
    kv = _kv_with()
    schedule = schedule_of(speculative_dag(), ["w-1"])
    sent_0, _ = settle(kv, handle(kv, worker_state(kv, "w-spec"), copy_trigger(schedule, 0)))
    assert _forwarded(sent_0) == [], "None is an invalid result"
    sent_1, _ = settle(kv, handle(kv, worker_state(kv, "w-1"), copy_trigger(schedule, 1)))
    [forwarded] = _forwarded(sent_1)
    assert serializer.load(forwarded.result) == 10


def test_a_failed_copy_does_not_win_either() -> None:
    kv = _kv_with()
    schedule = schedule_of(speculative_dag(), ["w-bad", "w-1"])
    sent, answers = settle(kv, handle(kv, worker_state(kv, "w-bad"), copy_trigger(schedule, 1)))
    assert sent == [] and answers == []
    sent, _ = settle(kv, handle(kv, worker_state(kv, "w-1"), copy_trigger(schedule, 2)))
    assert [serializer.load(t.result) for t in _forwarded(sent)] == [10]


def test_every_copy_invalid_fails_the_call_once_even_when_they_lose_together() -> None:
    kv = _kv_with(lambda _, x: None)
    schedule = schedule_of(speculative_dag(), ["w-1"])
    a, b = worker_state(kv, "w-spec"), worker_state(kv, "w-1")
    out_a = handle(kv, a, copy_trigger(schedule, 0))
    out_b = handle(kv, b, copy_trigger(schedule, 1))
    _, answers_a = settle(kv, out_a)
    sent_b, answers_b = settle(kv, out_b)
    assert answers_a == answers_b == [], "each saw the other still running"
    [again] = sent_b  # its guard lost to a's record: it decides again, without running
    assert again.queue == NAMES.worker("w-1") and again.message.trigger.HasField("copy_result")
    sent, answers = settle(kv, handle(kv, b, again.message.trigger))
    [answer] = answers
    assert not answer.success and answer.error == pb.EXECUTION_ERROR
    assert "every copy (2)" in pb.ErrorInfo.FromString(answer.value.body).message
    assert a.calls_total == b.calls_total == 1, "no copy ran twice"
    assert [t.aborted for t in _forwarded(sent)] == [True], "downstream is told to abort"
    stored = ValueStore(kv, SETTINGS).outcome("call-1")
    assert stored is not None and stored.type == pb.ERROR


def test_a_copy_that_starts_after_the_race_is_decided_does_not_run() -> None:
    kv = _kv_with(lambda _, x: x)
    schedule = schedule_of(speculative_dag(), ["w-1"])
    settle(kv, handle(kv, worker_state(kv, "w-spec"), copy_trigger(schedule, 0)))
    late = worker_state(kv, "w-1")
    sent, answers = settle(kv, handle(kv, late, copy_trigger(schedule, 1)))
    assert late.calls_total == 0 and sent == [] and answers == []


def test_a_redelivered_winner_sends_its_result_again_and_a_redelivered_loser_nothing() -> None:
    kv = _kv_with(lambda _, x: x + 1)
    schedule = schedule_of(speculative_dag(), ["w-1"])
    winner = worker_state(kv, "w-spec")
    settle(kv, handle(kv, winner, copy_trigger(schedule, 0)))
    sent, _ = settle(kv, handle(kv, winner, copy_trigger(schedule, 0)))
    assert [serializer.load(t.result) for t in _forwarded(sent)] == [6]
    assert winner.calls_total == 1, "the winner does not run again"
    sent, _ = settle(kv, handle(kv, worker_state(kv, "w-1"), copy_trigger(schedule, 1)))
    assert sent == []


def test_a_final_speculative_step_answers_once_also_for_a_direct_response() -> None:
    kv = _kv_with(lambda lib, x: lib.getid())
    schedule = schedule_of(speculative_dag(final=True), ["w-1"], direct=True)
    out_a = handle(kv, worker_state(kv, "w-spec"), copy_trigger(schedule, 0))
    out_b = handle(kv, worker_state(kv, "w-1"), copy_trigger(schedule, 1))
    _, answers_a = settle(kv, out_a)
    _, answers_b = settle(kv, out_b)
    results = {serializer.load(r.value) for r in answers_a + answers_b}
    assert results == {"w-spec"}, "every answer carries the one winner's result"


def test_speculative_copies_downstream_each_get_the_result() -> None:
    """A speculative step downstream of an ordinary one: its copies all get the trigger."""
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, x: x, "first")
    dag = pb.Dag(name="d", functions=["first", "spec"])
    dag.connections.add(source="first", sink="spec")
    dag.speculative.add(function="spec", copies=2)
    schedule = pb.DagSchedule(id="s1", call_id="c", response_address="client")
    schedule.dag.CopyFrom(dag)
    schedule.locations["first"], schedule.locations["spec"] = "w-first", "w-spec"
    schedule.copy_places["spec"].workers.append("w-1")
    serializer.dump(1, schedule.arguments["first"].values.add())
    t = pb.DagTrigger(id="s1", source=BEGIN, target_function="first")
    t.schedule.CopyFrom(schedule)
    sent, _ = settle(kv, handle(kv, worker_state(kv, "w-first"), t))
    assert sorted((o.queue, o.message.trigger.copy) for o in sent) == [
        (NAMES.worker("w-1"), 1), (NAMES.worker("w-spec"), 0)]


def test_a_valid_copy_writes_the_record_that_stops_the_others_even_when_it_lost() -> None:
    kv = _kv_with(lambda _, x: x)
    schedule = schedule_of(speculative_dag(), ["w-1"])
    out_a = handle(kv, worker_state(kv, "w-spec"), copy_trigger(schedule, 0))
    out_b = handle(kv, worker_state(kv, "w-1"), copy_trigger(schedule, 1))
    settle(kv, out_a)
    settle(kv, out_b)  # lost the race to copy 0
    keys = worker_state(kv).keys
    stops, _ = kv.get_prefix(keys.cancels)
    assert list(stops) == [keys.cancel("s1.spec.decided")]


def test_a_running_copy_is_interrupted_when_its_race_is_decided_and_its_worker_kept() -> None:
    """The race's stop record interrupts the function like a cancel (worker/cancel.py), but
    sets no hard-kill deadline: a lost race never exits a worker."""
    kv = MemoryKV()
    keys = worker_state(kv).keys
    cancels = Cancellations().start(kv, keys.cancels)  # pytest runs tests on the main thread
    stop = Commit(records={keys.cancel("s1.spec.decided"): b"1"}, records_ttl_s=60)
    committer = Committer(ValueStore(kv, SETTINGS), SETTINGS.etcd_max_txn_ops)
    threading.Timer(0.2, lambda: committer.apply(stop)).start()
    started = time.monotonic()
    value, _ = run_function(lambda _lib: time.sleep(30), None, [], 0.0,
                            cancels.interruptible("call-1", "s1.spec.decided"))
    assert cancels.deadline() is None, "no hard kill for a lost race"
    cancels.settle()
    cancels.close()
    assert time.monotonic() - started < 5
    assert value.type == pb.ERROR
    assert pb.ErrorInfo.FromString(value.body).code == pb.CANCELLED


def test_overloaded_workers_are_taken_last_but_taken() -> None:
    state = scheduler_state("w-spec", "w-after", "w-busy", "w-free")
    dag = speculative_dag(copies=4)
    state.dags["d"] = pb.DagRecord(dag=dag, ready=True)
    for w, f in (("w-spec", "spec"), ("w-after", "after")):
        state.pins[w] = pb.PinRecord(dag_name="d", function_name=f, worker_id=w)
    state.backoff.add("w-busy")
    out = Outbox()
    assert scheduler_dags.call_dag(pb.DagCall(name="d", call_id="c"), "addr", state, out).success
    [first, *_] = [o.message.trigger for o in out.sent if o.message.WhichOneof("kind") == "trigger"]
    assert list(first.schedule.copy_places["spec"].workers) == ["w-free", "w-after", "w-busy"]


def test_a_multi_call_whose_copies_all_lost_their_snapshot_runs_again() -> None:
    """As for an ordinary MULTI step: a snapshot compacted away is no failure of the call, it
    runs again on a fresh one (once every copy has lost)."""
    kv = _kv_with(lambda _, x: x)
    schedule = schedule_of(speculative_dag(), ["w-1"])
    schedule.consistency = pb.MULTI
    conflict = error_value(pb.CONFLICT, "the call's snapshot is gone")
    sent: list[Outgoing] = []
    for worker, copy in (("w-spec", 0), ("w-1", 1)):
        lost_copy = copy_trigger(schedule, copy)
        lost_copy.copy_result.CopyFrom(conflict)
        more, answers = settle(kv, handle(kv, worker_state(kv, worker), lost_copy))
        sent += more
        assert answers == []
    [retry] = sent
    assert retry.message.dag_call.call_id == "call-1" and retry.message.dag_call.attempt == 1
    assert ValueStore(kv, SETTINGS).outcome("call-1") is None, "no outcome: it runs again"


def test_copies_run_only_on_workers_with_the_tags_the_function_needs() -> None:
    state = scheduler_state("w-spec", "w-after", "w-gpu", "w-plain")
    state.workers["w-gpu"].resources["gpu"] = 1
    state.workers["w-spec"].resources["gpu"] = 1
    dag = speculative_dag(copies=4)
    dag.function_resources["spec"].amounts["gpu"] = 1
    state.dags["d"] = pb.DagRecord(dag=dag, ready=True)
    for w, f in (("w-spec", "spec"), ("w-after", "after")):
        state.pins[w] = pb.PinRecord(dag_name="d", function_name=f, worker_id=w)
    out = Outbox()
    assert scheduler_dags.call_dag(pb.DagCall(name="d", call_id="c"), "addr", state, out).success
    [first, *_] = [o.message.trigger for o in out.sent if o.message.WhichOneof("kind") == "trigger"]
    assert list(first.schedule.copy_places["spec"].workers) == ["w-gpu"]


def _lose_together(fn: Any, max_message_bytes: int, invalid: list[Any] | None = None,
                   upstream_bytes: int = 0) -> tuple[Outgoing, WorkerState, MemoryKV]:
    """Two copies that lose at once: the second one's re-sent trigger (decide again), from a
    worker whose messages may carry max_message_bytes."""
    kv = _kv_with(fn)
    schedule = schedule_of(speculative_dag(invalid=invalid), ["w-1"])
    a, b = worker_state(kv, "w-spec"), worker_state(kv, "w-1")
    b.max_message_bytes = max_message_bytes
    second = copy_trigger(schedule, 1)
    if upstream_bytes:  # a trigger that came in near the limit
        second.result.CopyFrom(serializer.dump(b"u" * upstream_bytes))
    out_a = handle(kv, a, copy_trigger(schedule, 0))
    out_b = handle(kv, b, second)
    settle(kv, out_a)
    [again], _ = settle(kv, out_b)
    return again, b, kv


def _decided(kv: MemoryKV, state: WorkerState, again: Outgoing) -> str:
    """The message of the call's failure once the re-sent trigger is handled."""
    _, answers = settle(kv, handle(kv, state, again.message.trigger))
    [answer] = answers
    assert not answer.success
    return pb.ErrorInfo.FromString(answer.value.body).message


def test_a_loss_decided_again_fits_in_one_message_whatever_the_error_size() -> None:
    def fails_loudly(lib: Any, x: int) -> None:
        raise ValueError("loud " + "e" * 300_000)

    limit = 64 * 1024
    again, b, kv = _lose_together(fails_loudly, limit)
    assert again.message.ByteSize() <= limit, "the broker would close the worker's channel"
    message = _decided(kv, b, again)
    assert message.startswith("ValueError: loud eee")


class _LikeNone:
    """A large result that compares equal to None (the default invalid result)."""

    def __init__(self, size: int) -> None:
        self.data = b"i" * size

    def __eq__(self, other: object) -> bool:
        return other is None

    __hash__ = None  # type: ignore[assignment]


def test_a_large_invalid_loss_decided_again_fits_and_still_fails_the_call() -> None:
    """The upstream's result and the loss each fit with the schedule, not both together."""
    limit = 400_000
    again, b, kv = _lose_together(lambda _, x: _LikeNone(150_000), limit,
                                  upstream_bytes=260_000)
    assert again.message.ByteSize() <= limit, "the broker would close the worker's channel"
    assert "every copy (2)" in _decided(kv, b, again)


def _loud_on_w2(lib: Any, x: int) -> None:
    """Copies 0 and 1 return None (invalid); copy 2 (on w-2) fails with a large error."""
    if lib.getid() == "w-2":
        raise ValueError("loud " + "\U0001f631" * 100_000)
    return None


def test_a_loss_decided_again_twice_keeps_the_head_of_its_error() -> None:
    """A copy whose re-sent trigger loses its guard again is re-sent a second time: the room
    of its loss is what the message leaves beside the trigger without the previous loss."""
    kv = _kv_with(_loud_on_w2)
    schedule = schedule_of(speculative_dag(copies=3), ["w-1", "w-2"])
    s0, s1, s2 = (worker_state(kv, w) for w in ("w-spec", "w-1", "w-2"))
    limit = 64 * 1024
    s2.max_message_bytes = limit
    outs = [handle(kv, s, copy_trigger(schedule, i)) for i, s in enumerate((s0, s1, s2))]
    settle(kv, outs[0])  # copy 0's loss recorded
    [again_1], _ = settle(kv, outs[1])  # copies 1 and 2 read the race before it: again
    [again_2], _ = settle(kv, outs[2])
    out_1 = handle(kv, s1, again_1.message.trigger)
    out_2 = handle(kv, s2, again_2.message.trigger)
    settle(kv, out_1)  # copy 1's loss recorded
    [again_2b], _ = settle(kv, out_2)  # copy 2 read the race before it: again, a second time
    assert again_2b.message.ByteSize() <= limit
    _, answers = settle(kv, handle(kv, s2, again_2b.message.trigger))
    [answer] = answers
    assert not answer.success
    message = pb.ErrorInfo.FromString(answer.value.body).message
    assert message.startswith("ValueError: loud \U0001f631"), message[:40]


_RUNS: dict[str, int] = {}


def _none_then_large(lib: Any, x: int) -> Any:
    """None (invalid) on every copy, except on w-1 from its second run on: a valid result
    too large for the race's records."""
    _RUNS[lib.getid()] = _RUNS.get(lib.getid(), 0) + 1
    if lib.getid() == "w-1" and _RUNS["w-1"] > 1:
        return b"v" * 300_000 + bytes([x])
    return None


def test_a_loss_decided_again_after_its_redelivered_trigger_won_does_not_fail_the_call() -> None:
    """Copy 1 loses, its guard fails (decide again is sent), its worker dies before the ack:
    the trigger is redelivered, runs again and wins (too large for the records: elided).
    The decide-again trigger, which no longer carries the upstream's result, then arrives:
    it must not run the step on an empty upstream and fail the call."""
    _RUNS.clear()
    kv = _kv_with(_none_then_large)
    dag = pb.Dag(name="d", functions=["first", "spec", "after"])
    dag.connections.add(source="first", sink="spec")
    dag.connections.add(source="spec", sink="after")
    spec = dag.speculative.add(function="spec", copies=2)
    serializer.dump(None, spec.invalid_results.add())
    schedule = schedule_of(dag, ["w-1"])
    schedule.arguments["spec"].Clear()

    def trigger(copy: int) -> pb.DagTrigger:
        t = pb.DagTrigger(id=schedule.id, source="first", target_function="spec", copy=copy)
        t.schedule.CopyFrom(schedule)
        serializer.dump(7, t.result)
        return t

    a, b = worker_state(kv, "w-spec"), worker_state(kv, "w-1")
    out_a = handle(kv, a, trigger(0))
    out_b = handle(kv, b, trigger(1))
    settle(kv, out_a)
    [again], _ = settle(kv, out_b)
    sent, answers = settle(kv, handle(kv, b, trigger(1)))  # redelivered: runs again and wins
    assert answers == [] and len(_forwarded(sent)) == 1
    sent, answers = settle(kv, handle(kv, b, again.message.trigger))
    assert answers == [] or all(r.success for r in answers), [
        pb.ErrorInfo.FromString(r.value.body).message for r in answers]
    assert not any(t.aborted for t in _forwarded(sent)), "the winner's result went on"


def test_a_redelivered_loss_that_closed_the_race_sends_its_aborts_on_again() -> None:
    """The decide-again trigger that closed the race, redelivered (its worker died before
    its messages were confirmed): the aborts go downstream again, as before."""
    kv = _kv_with(lambda _, x: None)
    schedule = schedule_of(speculative_dag(), ["w-1"])
    a, b = worker_state(kv, "w-spec"), worker_state(kv, "w-1")
    out_a = handle(kv, a, copy_trigger(schedule, 0))
    out_b = handle(kv, b, copy_trigger(schedule, 1))
    settle(kv, out_a)
    [again], _ = settle(kv, out_b)
    sent, answers = settle(kv, handle(kv, b, again.message.trigger))
    assert [t.aborted for t in _forwarded(sent)] == [True] and len(answers) == 1
    sent, _ = settle(kv, handle(kv, b, again.message.trigger))
    assert [t.aborted for t in _forwarded(sent)] == [True]


def _snapshot_gone_loudly(lib: Any, x: int) -> None:
    from droplet.errors import SnapshotExpired
    raise SnapshotExpired("compacted " + "c" * 300_000)


def test_a_multi_call_whose_copies_lost_their_snapshot_runs_again_after_a_cut_loss() -> None:
    """Both copies lose their snapshot at once with a large error: the one decided again
    (its loss cut to fit in one message) still closes the race by running the call again."""
    kv = _kv_with(_snapshot_gone_loudly)
    schedule = schedule_of(speculative_dag(invalid=[]), ["w-1"])
    schedule.consistency = pb.MULTI
    a, b = worker_state(kv, "w-spec"), worker_state(kv, "w-1")
    b.max_message_bytes = 64 * 1024
    out_a = handle(kv, a, copy_trigger(schedule, 0))
    out_b = handle(kv, b, copy_trigger(schedule, 1))
    settle(kv, out_a)
    [again], _ = settle(kv, out_b)
    assert again.message.ByteSize() <= b.max_message_bytes
    sent, answers = settle(kv, handle(kv, b, again.message.trigger))
    assert answers == []
    [retry] = [o.message.dag_call for o in sent if o.message.WhichOneof("kind") == "dag_call"]
    assert retry.attempt == 1 and retry.consistency == pb.MULTI
    assert not _forwarded(sent)


def _fails_loudly(lib: Any, x: int) -> None:
    raise KeyError("loud " + "e" * 300_000)


def test_a_large_error_loss_keeps_its_exception_type_and_as_much_message_as_fits() -> None:
    """A failure cut to fit (in the race's records, in a re-sent trigger) still names the
    exception's class, as the uncut failure does, and keeps what fits of its message."""
    limit = 64 * 1024
    again, b, kv = _lose_together(_fails_loudly, limit)
    assert again.message.ByteSize() <= limit
    _, answers = settle(kv, handle(kv, b, again.message.trigger))
    [answer] = answers
    info = pb.ErrorInfo.FromString(answer.value.body)
    assert info.code == pb.EXECUTION_ERROR and info.exception_type == "builtins.KeyError"
    assert len(info.message) > limit // 2, "an ASCII message is not cut to a quarter"
