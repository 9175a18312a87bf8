"""Speculative DAG steps through the whole message cycle, in one process (inprocess.py):
scheduler placement, copies on three workers, the race, the answer, and faults injected into
it (a publish not confirmed, a copy's worker crashing), checked for one outcome per call and
one run downstream."""

from __future__ import annotations

from collections import Counter
from typing import Any

from droplet.outbox import Outbox, Outgoing
from droplet.proto import envelope, pb
from droplet.store import serializer
from droplet.store.commits import Commit
from droplet.store.kv import ModRevisionBelow, Put

from .inprocess import Fleet
from .test_inprocess_faults import _lose_once, assert_one_outcome_each

RUNS: Counter[str] = Counter()


def spec(lib: Any, x: int) -> Any:
    RUNS[f"spec@{lib.getid()}"] += 1
    return None if lib.getid() == "w1" else (x, lib.getid())  # the pinned copy: invalid


def after(lib: Any, result: Any) -> Any:
    RUNS["after"] += 1
    return result


def _fleet(copies: int = 3) -> Fleet:
    RUNS.clear()
    fleet = Fleet()
    for w in ("w1", "w2", "w3", "w4"):
        fleet.start_worker(w)
    fleet.start_scheduler()
    fleet.register("spec", spec)
    fleet.register("after", after)
    dag = pb.Dag(name="d", functions=["spec", "after"])
    dag.connections.add(source="spec", sink="after")
    serializer.dump(None, dag.speculative.add(function="spec", copies=copies)
                    .invalid_results.add())
    fleet.pin(dag, {"spec": "w1", "after": "w2"})
    return fleet


def test_a_speculative_call_through_the_cycle_has_one_outcome_and_one_downstream_run() -> None:
    fleet = _fleet()
    call_ids = [fleet.call_dag("d", {"spec": [i]}) for i in range(5)]
    fleet.run_until_quiet()
    answers = fleet.answers()
    for i, call_id in enumerate(call_ids):
        [(x, winner)] = answers[call_id]
        assert x == i and winner in ("w3", "w4"), "an invalid result never wins"
    assert RUNS["after"] == 5, "one downstream run per call"
    assert RUNS["spec@w1"] >= 1 and RUNS["spec@w3"] + RUNS["spec@w4"] >= 5
    assert_one_outcome_each(fleet, call_ids)


def test_a_winners_forward_that_is_not_confirmed_still_ends_the_call_once() -> None:
    fleet = _fleet()
    _lose_once(fleet, lambda queue, messages: any(
        m.WhichOneof("kind") == "trigger" and m.trigger.source == "spec" for m in messages))
    call_id = fleet.call_dag("d", {"spec": [7]})
    fleet.run_until_quiet()
    [(x, _)] = fleet.answers()[call_id]
    assert x == 7 and RUNS["after"] == 1
    assert_one_outcome_each(fleet, [call_id])


def test_a_copys_worker_crashing_mid_call_leaves_one_outcome() -> None:
    """w3 takes its copy's trigger and dies before it acks; its trigger goes back to its
    queue, which nobody consumes: the others decide the race, and the call ends once."""
    fleet = _fleet()
    call_id = fleet.call_dag("d", {"spec": [3]})
    fleet.schedule()
    fleet.workers["w3"].conn.poll(0.05)  # taken, never acked
    fleet.crash("w3")
    fleet.run_until_quiet()
    [(x, winner)] = fleet.answers()[call_id]
    assert (x, winner) == (3, "w4") and RUNS["after"] == 1


def test_a_guarded_record_that_loses_its_race_sends_what_it_asked_instead() -> None:
    """The message cycle's side of a loss recorded at the same moment as another: the commit's
    guard fails and its `on_conflict` messages go out (not a requeue of the delivery)."""
    fleet = Fleet()
    member = fleet.start_worker("w1")
    keys = member.service.keys
    version = keys.join("s", "spec$copies") + "v"
    fleet.kv.txn([], [Put(version, b"")])  # someone recorded a loss since the read
    again = pb.Message(trigger=pb.DagTrigger(id="s", target_function="spec"))
    out = Outbox()
    out.store(Commit(records={keys.join_part("s", "spec$copies", "0"): b"x", version: b""},
                     guards=[ModRevisionBelow(version, 1)]),
              on_conflict=[Outgoing(fleet.names.worker("w1"), again)])
    member.cycle.commit(out)
    member.conn.pump()
    [waiting] = fleet.broker.queues[fleet.names.worker("w1")].ready
    [message] = envelope.decode(waiting.body, fleet.signer)
    assert message.trigger.target_function == "spec"
    assert fleet.kv.get(keys.join_part("s", "spec$copies", "0")) is None, "nothing written"
