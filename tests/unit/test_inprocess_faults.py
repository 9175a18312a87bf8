"""Faults injected at each step of the message cycle, deterministically, in one process:
workers and a scheduler over the stub broker and MemoryKV (see inprocess.py).

Each test injects one fault (a publish the broker does not confirm, a store write failing
after a join was consumed, a crash between storing an outcome and acking, a redelivery) and
checks the history: every call has exactly one stored outcome, every answer equals it, and
nothing is left unacked.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from droplet.errors import BrokerError
from droplet.graph import BEGIN
from droplet.proto import envelope, pb
from droplet.scheduler import dags
from droplet.store import serializer
from droplet.store.kv import Put

from .inprocess import Fleet

RUNS: Counter[str] = Counter()


# Module-level functions are pickled by reference: the workers (in this process) count in
# this very RUNS.
def first(lib: Any, *args: Any) -> Any:
    RUNS["first"] += 1
    return ["first", *args]


def second(lib: Any, *args: Any) -> Any:
    RUNS["second"] += 1
    return ["second", *args]


def f(lib: Any, *args: Any) -> Any:
    RUNS["f"] += 1
    return ["f", *args]


def step(lib: Any, *args: Any) -> Any:
    RUNS["step"] += 1
    return ["step", *args]


def add(lib: Any, x: int, y: int) -> int:
    RUNS["add"] += 1
    return x + y


def linear(fleet: Fleet, name: str, functions: list[str]) -> pb.Dag:
    dag = pb.Dag(name=name, functions=functions)
    for source, sink in itertools.pairwise(functions):
        dag.connections.add(source=source, sink=sink)
    return dag


def assert_one_outcome_each(fleet: Fleet, call_ids: list[str]) -> None:
    answers = fleet.answers()
    for call_id in call_ids:
        stored = fleet.stored(call_id)
        assert stored is not None, f"{call_id} has no stored outcome"
        assert answers.get(call_id), f"{call_id} was never answered"
        assert all(a == stored for a in answers[call_id]), "an answer differs from the store"
    for queue, q in fleet.broker.queues.items():
        if queue.startswith(fleet.names.namespace) and not queue.endswith(".dead"):
            assert not q.ready, f"{queue} still holds messages"
    for member in fleet.workers.values():
        assert not member.conn._unacked, "a delivery was left unacked"


def _dag_fleet() -> Fleet:
    fleet = Fleet()
    for w in ("w1", "w2"):
        fleet.start_worker(w)
    fleet.start_scheduler()
    fleet.register("first", first)
    fleet.register("second", second)
    fleet.pin(linear(fleet, "d", ["first", "second"]), {"first": "w1", "second": "w2"})
    return fleet


def _lose_once(fleet: Fleet, lost: Any) -> None:
    """The broker fails to confirm the first publish that `lost(queue, messages)` matches."""
    armed = [True]

    def nack(queue: str, body: bytes) -> bool:
        if not armed or not queue.startswith("inproc."):
            return False
        if lost(queue, envelope.decode(body, fleet.signer)):
            return bool(armed.pop())
        return False

    fleet.broker.nack_when = nack


def test_an_unconfirmed_trigger_goes_through_the_scheduler_and_the_call_ends_once() -> None:
    RUNS.clear()
    fleet = _dag_fleet()
    _lose_once(fleet, lambda queue, messages: any(
        m.WhichOneof("kind") == "trigger" and m.trigger.source == "first" for m in messages))
    call_id = fleet.call_dag("d", {"first": [1]})
    fleet.run_until_quiet()

    assert fleet.answers()[call_id] == [["second", ["first", 1]]]
    assert RUNS == {"first": 1, "second": 1}
    assert_one_outcome_each(fleet, [call_id])


def test_an_unconfirmed_placement_requeues_the_call_and_it_runs_once() -> None:
    RUNS.clear()
    fleet = _dag_fleet()
    _lose_once(fleet, lambda queue, messages: queue == fleet.names.work)
    call_id = fleet.call("f", 5, queue=fleet.names.calls)
    fleet.register("f", f)
    fleet.run_until_quiet()

    assert fleet.answers()[call_id] == [["f", 5]]
    assert RUNS == {"f": 1}
    assert_one_outcome_each(fleet, [call_id])


def _fan_in(call_id: str) -> tuple[Fleet, Callable[[str, Any], None]]:
    """A fleet of one worker holding the join `add` of x and y for call_id, and a function
    sending it x's or y's trigger with a result."""
    fleet = Fleet()
    fleet.start_worker("w1")
    fleet.register("add", add)
    dag = pb.Dag(name="j", functions=["x", "y", "add"])
    dag.connections.add(source="x", sink="add")
    dag.connections.add(source="y", sink="add")
    schedule = pb.DagSchedule(id="s-" + call_id, call_id=call_id,
                              response_address=fleet.reply_to)
    schedule.dag.CopyFrom(dag)
    schedule.locations.update({"x": "w1", "y": "w1", "add": "w1"})

    def trigger(source: str, value: Any) -> None:
        t = pb.DagTrigger(id=schedule.id, source=source, target_function="add")
        t.schedule.CopyFrom(schedule)
        serializer.dump(value, t.result)
        fleet.client.publish(fleet.names.worker("w1"),
                             envelope.encode([pb.Message(trigger=t)], fleet.signer))

    return fleet, trigger


def test_a_store_failure_after_a_join_was_read_leaves_the_join_whole() -> None:
    RUNS.clear()
    fleet, trigger = _fan_in("call-j")
    trigger("x", 40)
    fleet.run_until_quiet()
    failing = [True]
    fleet.kv.fail_when = lambda op, ops: op == "txn" and bool(failing) and any(
        isinstance(o, Put) and o.key.endswith("/done") for o in ops) and bool(failing.pop())
    trigger("y", 2)
    fleet.run_until_quiet()

    assert RUNS["add"] == 2, "ran, failed to store, ran again"
    assert fleet.answers()["call-j"] == [42]
    assert_one_outcome_each(fleet, ["call-j"])


def test_a_join_partial_too_large_for_etcd_fails_the_call_once_and_is_acked() -> None:
    """A fan-in's partial over etcd's request limit cannot be recorded: the call fails at
    once naming the limit (one stored outcome, every delivery acked), instead of the cycle
    crashing on each redelivery until the trigger is dead-lettered."""
    RUNS.clear()
    fleet, trigger = _fan_in("call-big")
    trigger("x", b"p" * (2 * 1024 * 1024))
    trigger("y", b"q" * (2 * 1024 * 1024))
    fleet.run_until_quiet()

    stored = fleet.values.outcome("call-big")
    assert stored is not None and stored.type == pb.ERROR
    info = pb.ErrorInfo.FromString(stored.body)
    assert info.code == pb.INVALID_REQUEST and "MiB" in info.message, info.message
    assert RUNS["add"] == 0
    assert not fleet.broker.queues[fleet.names.dead].ready, "nothing dead-lettered"
    assert_one_outcome_each(fleet, ["call-big"])


def test_a_crash_between_storing_an_outcome_and_acking_answers_from_the_store() -> None:
    RUNS.clear()
    fleet = Fleet()
    member = fleet.start_worker("w1")
    fleet.register("f", f)
    call_id = fleet.call("f", 7)
    real_ack = member.conn.ack

    def crash_on_ack(tag: int, multiple: bool = False) -> None:
        raise BrokerError("the process died here")

    member.conn.ack = crash_on_ack  # type: ignore[method-assign]
    with contextlib.suppress(BrokerError):
        fleet.step("w1")
    member.conn.ack = real_ack  # type: ignore[method-assign]
    assert fleet.stored(call_id) == ["f", 7], "the outcome was stored before the crash"
    fleet.crash("w1")
    fleet.start_worker("w1")  # the same id, a new process
    fleet.run_until_quiet()

    assert RUNS["f"] == 1, "the redelivered call was answered, not run again"
    assert_one_outcome_each(fleet, [call_id])


def test_a_scheduler_redelivery_marks_the_call_so_its_worker_looks_for_an_outcome() -> None:
    RUNS.clear()
    fleet = Fleet()
    fleet.start_worker("w1")
    fleet.start_scheduler()
    fleet.register("f", f)
    call_id = fleet.call("f", 3, queue=fleet.names.calls)
    fleet.run_until_quiet()
    # The scheduler died after forwarding but before acking: its delivery comes back.
    from droplet.proto import envelope
    from droplet.store import serializer

    again = pb.FunctionCall(name="f", call_id=call_id, response_key=call_id,
                            response_address=fleet.reply_to)
    serializer.dump(3, again.arguments.values.add())
    fleet.client.publish(fleet.names.calls, envelope.encode([pb.Message(call=again)],
                                                            fleet.signer),
                         headers={"x-droplet-resent": 1})
    fleet.run_until_quiet()

    assert RUNS["f"] == 1
    assert len(fleet.answers()[call_id]) == 2, "answered again, with the same outcome"
    assert_one_outcome_each(fleet, [call_id])


def test_each_delivery_is_answered_before_the_next_one_runs() -> None:
    RUNS.clear()
    fleet = Fleet()
    fleet.start_worker("w1")
    fleet.register("f", f)
    first, second = fleet.call("f", 1), fleet.call("f", 2)
    fleet.step("w1")
    answered = fleet.answers()
    assert first in answered and second not in answered
    fleet.step("w1")
    assert_one_outcome_each(fleet, [first, second])


def test_a_worker_with_a_step_to_run_stops_taking_plain_calls_first() -> None:
    RUNS.clear()
    fleet = Fleet()
    member = fleet.start_worker("w1")
    fleet.register("step", step)
    dag = pb.Dag(name="one", functions=["step"])
    fleet.pin(dag, {"step": "w1"})
    schedule = pb.DagSchedule(id="s", call_id="c-step", response_address=fleet.reply_to)
    schedule.dag.CopyFrom(dag)
    schedule.locations["step"] = "w1"
    trigger = pb.DagTrigger(id="s", source=BEGIN, target_function="step")
    trigger.schedule.CopyFrom(schedule)
    from droplet.proto import envelope

    fleet.client.publish(fleet.names.worker("w1"),
                         envelope.encode([pb.Message(trigger=trigger)], fleet.signer))
    fleet.step("w1")
    assert not member.conn.consuming(fleet.names.work), "paused before the step ran"
    plain = fleet.call("step", "plain")  # sent once the step is done
    fleet.step("w1", 0.01)
    # Its queue empty, it consumed again at once (not after a poll's wait): it took the call.
    assert member.conn.consuming(fleet.names.work), "consuming again once its queue is empty"
    assert plain in fleet.answers()
    fleet.run_until_quiet()
    assert_one_outcome_each(fleet, ["c-step", plain])


def test_a_worker_paused_past_its_lease_keeps_its_queue_and_what_it_holds() -> None:
    """Its lease ran out, but it is still connected, holding unacked deliveries: a scheduler
    moves what waits in its queue elsewhere, and does not delete the queue (which would
    destroy what the paused worker holds)."""
    from droplet.scheduler.reaper import Reaper

    RUNS.clear()
    fleet = Fleet()
    paused = fleet.start_worker("w1")
    fleet.start_worker("w2")
    scheduler = fleet.start_scheduler()
    fleet.register("f", f)
    held = fleet.call("f", 1, queue=fleet.names.worker("w1"))
    [in_hand] = paused.conn.poll(0.05)  # delivered, unacked: then the process stops
    # Stopped, it takes nothing more here (RabbitMQ would still fill a free prefetch slot of
    # a stopped process; such a call waits until the process wakes or its connection dies).
    paused.conn.pause(fleet.names.worker("w1"))
    paused.conn.pause(fleet.names.work)
    waiting = fleet.call("f", 2, queue=fleet.names.worker("w1"))
    paused.service.membership.leave()  # ... and its lease runs out
    scheduler.state.workers.pop("w1", None)
    reaper = Reaper(fleet.broker.connect, fleet.names, scheduler.state, fleet.kv,
                    fleet.values.keys, lambda: None)
    [(worker, entry)] = reaper.dead_members().items()
    assert worker == "w1"
    reaper.reap(worker, entry)
    assert fleet.names.worker("w1") in fleet.broker.queues, "its queue stays"
    member = fleet.workers.pop("w1")
    fleet.run_until_quiet()
    assert fleet.answers().get(waiting) == [["f", 2]], "what waited ran elsewhere"
    fleet.workers["w1"] = member
    gate = member.cycle.run(in_hand, member.service._dispatch)  # it wakes up and goes on
    fleet.settle("w1")
    assert gate.done and gate.action == "ack"
    assert_one_outcome_each(fleet, [held, waiting])


def transfer(lib: Any, amount: int) -> int:
    RUNS["transfer"] += 1
    balance = lib.get("balance") or 0
    lib.put("balance", balance + amount)
    return int(balance + amount)


def test_a_multi_call_that_committed_is_not_failed_later_by_a_resend() -> None:
    """A MULTI call answered directly still stores its outcome with its writes: when the same
    call comes back (a retry sent after a commit whose answer was lost) and finds no worker,
    it waits for one (scheduler/dags.py _wait_for_pins), and once it has waited out
    REROUTE_DEADLINE_S it is answered with what was committed, never with NO_RESOURCES."""
    RUNS.clear()
    fleet = Fleet()
    fleet.start_worker("w1")
    fleet.start_scheduler()
    fleet.register("transfer", transfer)
    fleet.pin(pb.Dag(name="x", functions=["transfer"]), {"transfer": "w1"})
    call_id = fleet.call_dag("x", {"transfer": [5]}, consistency=pb.MULTI,
                             direct_response=True)
    fleet.run_until_quiet()
    assert fleet.answers()[call_id] == [5]
    fleet.crash("w1")
    assert fleet.scheduler is not None
    fleet.scheduler.fleet.refresh()
    again = pb.DagCall(name="x", call_id=call_id, response_address=fleet.reply_to,
                       consistency=pb.MULTI, direct_response=True, attempt=1)
    from droplet.store import serializer

    serializer.dump(5, again.function_args["transfer"].values.add())
    fleet.client.publish(fleet.names.calls,
                         envelope.encode([pb.Message(dag_call=again)], fleet.signer),
                         reply_to=fleet.reply_to)
    fleet.run_until_quiet()
    assert fleet.answers()[call_id] == [5], "no answer while it waits for a worker"
    assert fleet.client.queue_depth(fleet.names.retry(dags.REROUTE_DELAY_MS)) == 1

    again.unplaced_since = time.time() - dags.REROUTE_DEADLINE_S  # it has waited it out
    fleet.client.publish(fleet.names.calls,
                         envelope.encode([pb.Message(dag_call=again)], fleet.signer),
                         reply_to=fleet.reply_to)
    fleet.run_until_quiet()

    assert RUNS["transfer"] == 1
    assert fleet.answers()[call_id] == [5, 5], "the resend answered what was committed"
    assert fleet.stored(call_id) == 5
