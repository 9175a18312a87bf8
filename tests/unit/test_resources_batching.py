"""Resource tags, batching and colocation without a broker: placement and pin filtering in the
scheduler, the worker sending a misplaced call back, and batches gathered and run once."""

from __future__ import annotations

import random
from typing import Any

import cloudpickle
import pytest

from droplet import resources
from droplet.client.tagging import dag_options, registration_options
from droplet.errors import InvalidArgumentError
from droplet.outbox import Outbox
from droplet.proto import envelope, pb
from droplet.scheduler import calls, dags
from droplet.scheduler.healing import heal_pins
from droplet.scheduler.tagged import pick_tagged
from droplet.signing import Signer
from droplet.store import serializer
from droplet.store.memory import MemoryKV
from droplet.worker import batching, handlers
from droplet.worker.handlers import exec_function

from .helpers import (
    NAMES,
    RecordingPins,
    commit,
    function_call,
    linear_dag,
    metadata,
    scheduler_state,
    stored,
    worker_state,
)


def tagged_state(**tags: dict[str, float]) -> Any:
    state = scheduler_state(*tags)
    for worker, needs in tags.items():
        state.workers[worker].resources.update(needs)
    return state


# -- tags ---------------------------------------------------------------------------------------


def test_tags_parse_and_a_worker_satisfies_only_at_least_as_much_of_each() -> None:
    tags = resources.parse("gpu=1, mem=16,fast")
    assert tags == {"gpu": 1.0, "mem": 16.0, "fast": 1.0}
    assert resources.satisfies(tags, {"gpu": 1, "mem": 8})
    assert not resources.satisfies(tags, {"mem": 32})
    assert not resources.satisfies({}, {"gpu": 1})
    assert resources.satisfies({}, {})
    assert resources.merged({"gpu": 1}, {"gpu": 2, "mem": 4}) == {"gpu": 2, "mem": 4}
    for bad in ("gpu=x", "=1", "gpu=-1", "gpu=inf"):
        with pytest.raises(InvalidArgumentError):
            resources.parse(bad)


def test_registration_options_check_batch_size_and_linger() -> None:
    assert registration_options({"gpu": 1}, False, 0, 0) == ({"gpu": 1.0}, None)
    assert registration_options(None, True, 8, 20) == ({}, (8, 0.02))
    for size, linger in ((0, 5), (10**6, 5), (8, -1), (8, float("nan"))):
        with pytest.raises(InvalidArgumentError):
            registration_options(None, True, size, linger)


def test_gpu_functions_batching_and_colocated_fill_the_dag() -> None:
    dag = linear_dag("d", ["a", "b", "c"])
    dag_options(dag, ["b"], ["c"], ["a", "b"], {"c": {"mem": 4}})
    assert dict(dag.function_resources["b"].amounts) == {"gpu": 1.0}
    assert dict(dag.function_resources["c"].amounts) == {"mem": 4.0}
    assert list(dag.batching_functions) == ["c"]
    assert [list(g.functions) for g in dag.colocated] == [["a", "b"]]
    with pytest.raises(InvalidArgumentError):
        dag_options(pb.Dag(), "b", [], [], None)


# -- placing calls ------------------------------------------------------------------------------


def test_a_call_needing_tags_goes_only_to_a_worker_that_has_them() -> None:
    state = tagged_state(plain={}, gpu={"gpu": 1.0})
    for _ in range(10):
        assert pick_tagged(state, {"gpu": 1}) == NAMES.worker("gpu")
    assert pick_tagged(state, {"gpu": 2}) is None
    assert pick_tagged(state, {"tpu": 1}) is None


def test_tagged_calls_go_idle_first_and_a_burst_is_spread() -> None:
    state = tagged_state(a={"gpu": 1.0}, b={"gpu": 1.0}, c={"gpu": 1.0})
    state.workers["a"].queue_depth = 3  # busy
    chosen = [pick_tagged(state, {"gpu": 1}) for _ in range(4)]
    assert chosen[:2].count(NAMES.worker("a")) == 0, "the idle workers first"
    assert {NAMES.worker("b"), NAMES.worker("c")} <= set(chosen[:2])
    # A new status record (it counts what is in hand) starts the count again.
    state.workers["b"].updated_at += 1
    assert pick_tagged(state, {"gpu": 1}) == NAMES.worker("b")


def test_the_scheduler_answers_no_resources_when_no_live_worker_has_the_tags() -> None:
    state = tagged_state(plain={})
    call = function_call("f", [1])
    call.resources["gpu"] = 1
    out = Outbox()
    response = calls.call_function(call, "reply", state, out)
    assert response.error == pb.NO_RESOURCES and "gpu=1" in response.message
    assert out.sent == [] and len(out.durable) == 1, "its outcome stored, nothing placed"
    call.resources["gpu"] = 0.5
    state.workers["plain"].resources["gpu"] = 1
    out = Outbox()
    assert calls.call_function(call, "reply", state, out).success
    assert [o.queue for o in out.sent] == [NAMES.worker("plain")]


def test_a_batching_call_goes_to_a_workers_own_queue() -> None:
    state = tagged_state(w1={})
    call = function_call("f", [1])
    call.batching = True
    out = Outbox()
    calls.call_function(call, None, state, out)
    assert [o.queue for o in out.sent] == [NAMES.worker("w1")]


def test_a_worker_without_the_tags_sends_the_call_back_to_the_schedulers() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    md.put_function(pb.Function(name="f", body=cloudpickle.dumps(lambda lib, x: x),
                                resources={"gpu": 1}))
    state = worker_state(kv)
    out = Outbox()
    exec_function(function_call("f", [1]), state, out)
    assert [o.queue for o in out.sent] == [NAMES.calls], "not run here"
    assert dict(out.sent[0].message.call.resources) == {"gpu": 1.0}, "its needs spelled out"
    assert out.durable == [] and state.calls_total == 0
    state.resources["gpu"] = 1.0
    out = Outbox()
    exec_function(function_call("f", [1]), state, out)
    assert out.sent == [] and state.calls_total == 1, "a worker with the tags runs it"


# -- pins ---------------------------------------------------------------------------------------


def test_gpu_functions_are_pinned_only_on_gpu_workers_and_first() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    md.put_function(pb.Function(name="a", body=b"x"))
    md.put_function(pb.Function(name="b", body=b"x"))
    for seed in range(10):
        state = tagged_state(w1={}, w2={"gpu": 1.0})
        dag = linear_dag(f"d{seed}", ["a", "b"])
        dag.function_resources["b"].amounts["gpu"] = 1
        pins = RecordingPins([True, True])
        assert dags.create_dag(dag, state, md, pins, lambda _: True,
                               rng=random.Random(seed)).success
        assert state.dag_locations(dag.name) == {"a": "w1", "b": "w2"}
        dags.delete_dag(dag.name, state, md, pins)


def test_a_function_registered_with_resources_is_pinned_by_them_or_no_resources() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    md.put_function(pb.Function(name="a", body=b"x", resources={"mem": 32}))
    state = tagged_state(w1={"mem": 16.0}, w2={})
    pins = RecordingPins([True])
    response = dags.create_dag(linear_dag("d", ["a"]), state, md, pins, lambda _: True)
    assert response.error == pb.NO_RESOURCES and "mem=32" in response.message
    assert pins.pinned == [] and md.get_dag("d") is None


def test_colocated_functions_are_pinned_on_one_host_when_possible() -> None:
    for seed in range(10):
        md = metadata(MemoryKV())
        for name in "ab":
            md.put_function(pb.Function(name=name, body=b"x"))
        state = tagged_state(x1={}, y1={}, x2={}, y2={})
        for worker, status in state.workers.items():
            status.host = worker[0]
        dag = linear_dag(f"d{seed}", ["a", "b"])
        dag.colocated.add(functions=["a", "b"])
        assert dags.create_dag(dag, state, md, RecordingPins([True, True]), lambda _: True,
                               rng=random.Random(seed)).success
        where = state.dag_locations(dag.name)
        assert where["a"][0] == where["b"][0], f"one host: {where}"


def test_healing_moves_a_gpu_pin_only_to_another_gpu_worker() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    md.put_function(pb.Function(name="g", body=b"x"))
    state = tagged_state(g1={"gpu": 1.0}, plain={}, g2={"gpu": 1.0})
    dag = linear_dag("d", ["g"])
    dag.function_resources["g"].amounts["gpu"] = 1
    pins = RecordingPins([True, True])
    assert dags.create_dag(dag, state, md, pins, lambda _: True).success
    holder = state.dag_locations("d")["g"]
    state.workers.pop(holder)
    heal_pins(state, md, pins)
    assert state.dag_locations("d")["g"] in {"g1", "g2"} - {holder}


def test_a_dag_naming_unknown_functions_in_its_lists_is_refused() -> None:
    kv = MemoryKV()
    dag = linear_dag("d", ["a"])
    dag.batching_functions.append("zz")
    response = dags.create_dag(dag, tagged_state(w={}), metadata(kv), RecordingPins(),
                               lambda _: True)
    assert response.error == pb.INVALID_REQUEST and "zz" in response.message


# -- batches ------------------------------------------------------------------------------------


def _batching_state(kv: MemoryKV, fn: Any, size: int = 32) -> handlers.WorkerState:
    md = metadata(kv)
    md.put_function(pb.Function(name="b", body=cloudpickle.dumps(fn), batching=True,
                                batch_size=size, batch_linger_s=0.001))
    state = worker_state(kv)
    state.batching.add("b")
    return state


def _delivery_items(state: handlers.WorkerState, *calls: pb.FunctionCall) -> Any:
    body = envelope.encode([pb.Message(call=c) for c in calls], Signer(None))
    return batching.items_of(body, Signer(None), state, maybe_run=False)


SIZES: list[int] = []  # module level: the function is pickled by reference, not copied


def double(lib: Any, batch: list[tuple[int]]) -> list[int]:
    SIZES.append(len(batch))
    return [x * 2 for (x,) in batch]


def test_waiting_calls_run_in_one_invocation_and_each_gets_its_own_result() -> None:
    kv = MemoryKV()
    sizes = SIZES
    sizes.clear()
    state = _batching_state(kv, double)
    first = _delivery_items(state, *(function_call("b", [i], f"c{i}") for i in range(3)))
    gathering = batching.Gathering(state, first)
    second = _delivery_items(state, *(function_call("b", [i], f"c{i}") for i in range(3, 5)))
    assert gathering.wants(second)
    gathering.add(second)
    assert gathering.run() == 5 and sizes == [5], "one invocation for all five"
    for i in range(5):
        out = Outbox()
        exec_function(function_call("b", [i], f"c{i}"), state, out)
        commit(kv, out)
        assert stored(kv, f"c{i}") == i * 2
    assert sizes == [5], "no call ran again"
    # A duplicate delivery of a batched call in the same group answers the same, unrun (the
    # worker empties state.batched once the group is done: worker/service.py).
    out = Outbox()
    assert exec_function(function_call("b", [0], "c0"), state, out) == serializer.dump(0)
    assert sizes == [5]


def test_a_batch_is_cut_at_its_size_and_stops_wanting_more() -> None:
    kv = MemoryKV()
    sizes = SIZES
    sizes.clear()
    state = _batching_state(kv, double, size=4)
    gathering = batching.Gathering(
        state, _delivery_items(state, *(function_call("b", [i], f"c{i}") for i in range(6))))
    assert gathering.full()
    assert not gathering.wants(_delivery_items(state, function_call("b", [9], "c9")))
    gathering.run()
    assert sizes == [4, 2]


@pytest.mark.parametrize("fn, says", [
    (lambda lib, batch: [1], "returned 1 results for 3 calls"),
    (lambda lib, batch: 7, "a list of results"),
    (lambda lib, batch: 1 / 0, "ZeroDivisionError"),
])
def test_a_bad_batch_fails_every_call_in_it_clearly(fn: Any, says: str) -> None:
    kv = MemoryKV()
    state = _batching_state(kv, fn)
    batch = [function_call("b", [i], f"c{i}") for i in range(3)]
    batching.Gathering(state, _delivery_items(state, *batch)).run()
    for call in batch:
        out = Outbox()
        exec_function(call, state, out)
        commit(kv, out)
        failure = stored(kv, call.call_id)
        assert isinstance(failure, pb.ErrorInfo) and failure.code == pb.EXECUTION_ERROR
        assert says in failure.message


def test_a_batching_function_called_alone_gets_a_batch_of_one() -> None:
    kv = MemoryKV()
    state = _batching_state(kv, lambda lib, batch: [repr(batch)])
    out = Outbox()
    exec_function(function_call("b", [5]), state, out)
    commit(kv, out)
    assert stored(kv, "resp-key") == "[(5,)]"


def test_copies_that_may_have_run_do_not_join_a_batch() -> None:
    kv = MemoryKV()
    state = _batching_state(kv, lambda lib, batch: batch)
    call = function_call("b", [1])
    body = envelope.encode([pb.Message(call=call)], Signer(None))
    assert batching.items_of(body, Signer(None), state, maybe_run=True) == {}
    call.maybe_done = True
    assert _delivery_items(state, call) == {}


def test_a_stored_registration_says_whether_it_batches() -> None:
    sealed = Signer("k" * 32).seal(pb.Function(name="b", batching=True).SerializeToString())
    assert batching.batches(sealed)
    assert not batching.batches(Signer(None).seal(pb.Function(name="p").SerializeToString()))
    assert not batching.batches(None) and not batching.batches(b"\x07junk")


def test_batch_items_of_dag_steps_carry_their_upstream_result() -> None:
    kv = MemoryKV()
    state = _batching_state(kv, lambda lib, batch: batch)
    dag = linear_dag("d", ["a", "b"])
    schedule = pb.DagSchedule(id="s", call_id="call", dag=dag)
    serializer.dump(10, schedule.arguments["b"].values.add())
    trigger = pb.DagTrigger(id="s", source="a", target_function="b",
                            result=serializer.dump(3))
    trigger.schedule.CopyFrom(schedule)
    item = batching.batch_item(pb.Message(trigger=trigger), state)
    assert item is not None and item.key == ("b", "call") and item.extra == [3]
    trigger.schedule.consistency = pb.MULTI
    assert batching.batch_item(pb.Message(trigger=trigger), state) is None, "MULTI runs alone"


def test_a_worker_gets_its_tags_from_the_environment_or_a_toml_table(tmp_path: Any) -> None:
    from droplet.errors import ConfigurationError
    from droplet.settings import Settings

    env = Settings.from_env({"DROPLET_WORKER_RESOURCES": "gpu=1,mem=16"})
    assert resources.parse(env.worker_resources) == {"gpu": 1.0, "mem": 16.0}
    config = tmp_path / "droplet.toml"
    config.write_text("[droplet]\nworker_resources = {gpu = 2, mem = 8}\n")
    assert resources.parse(Settings.from_file(config).worker_resources) == {"gpu": 2.0,
                                                                            "mem": 8.0}
    with pytest.raises(ConfigurationError, match="worker_resources"):
        Settings.from_env({"DROPLET_WORKER_RESOURCES": "gpu=lots"})
    assert Settings.from_env({}).worker_resources is None


def test_bad_tags_on_the_command_line_are_refused_before_anything_starts(
        capsys: pytest.CaptureFixture[str]) -> None:
    from droplet.cli.main import main

    assert main(["worker", "--resources", "gpu=lots"]) == 1
    assert main(["up", "--tagged-worker", "gpu=-1"]) == 1
    err = capsys.readouterr().err
    assert "gpu=lots" in err and "gpu" in err.splitlines()[-1]


def test_a_batch_failing_with_a_retryable_error_retries_each_call_on_its_own() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    md.put_function(pb.Function(name="b", body=cloudpickle.dumps(lambda lib, batch: 1 / 0),
                                batching=True, max_retries=2,
                                retry_on=["builtins.ZeroDivisionError"]))
    state = worker_state(kv)
    state.batching.add("b")
    batch = [function_call("b", [i], f"c{i}") for i in range(3)]
    batching.Gathering(state, _delivery_items(state, *batch)).run()
    for call in batch:
        out = Outbox()
        exec_function(call, state, out)
        assert out.durable == [], "no outcome yet: it runs again"
        again = [o.message.call for o in out.sent]
        assert [(c.call_id, c.attempt) for c in again] == [(call.call_id, 1)]
        assert NAMES.retry_delay_ms(out.sent[0].queue) is not None


def test_a_batching_call_needing_tags_this_worker_lacks_joins_no_batch_here() -> None:
    kv = MemoryKV()
    state = _batching_state(kv, double)
    call = function_call("b", [1])
    call.resources["gpu"] = 1
    assert _delivery_items(state, call) == {}, "it goes back to the schedulers, unrun"
    state.resources["gpu"] = 1.0
    assert list(_delivery_items(state, call)) == ["b"]


def test_a_burst_goes_to_the_idle_worker_while_the_other_is_busy() -> None:
    state = tagged_state(busy={"gpu": 1.0}, idle={"gpu": 1.0})
    state.workers["busy"].queue_depth = 1  # its status: a call in hand
    assert {pick_tagged(state, {"gpu": 1}) for _ in range(5)} == {NAMES.worker("idle")}
    state.workers["idle"].queue_depth = 2  # both busy now: the fewest in hand
    state.workers["idle"].updated_at += 1
    assert pick_tagged(state, {"gpu": 1}) == NAMES.worker("busy")


def test_a_body_is_marked_when_it_carries_a_call_or_step_of_a_batching_function() -> None:
    plain = pb.Message(call=function_call("p", [1]))
    batched = pb.Message(call=function_call("b", [1]))
    batched.call.batching = True
    step = pb.Message(trigger=pb.DagTrigger(target_function="b"))
    step.trigger.schedule.dag.batching_functions.append("b")
    other_step = pb.Message(trigger=pb.DagTrigger(target_function="p"))
    other_step.trigger.schedule.dag.batching_functions.append("b")
    assert not envelope.batches([plain, other_step])
    assert envelope.batches([plain, batched])
    assert envelope.batches([other_step, step])
