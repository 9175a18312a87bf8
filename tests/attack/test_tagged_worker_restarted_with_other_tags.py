"""Attack: a worker pinned on a DAG function that needs `gpu` is restarted under the same id
without the tag (`droplet worker --id W` with other `--resources`).

Before: the new process took up the old pin (join_fleet) and ran every trigger of the gpu
function, those left in its queue and all that followed, on a worker without a gpu (README:
"DAG functions that need tags are pinned only on such workers"). Now the pin is given up (the
schedulers pin the function again on a worker that qualifies) and a trigger for a function
this worker may not run goes back to the schedulers, which send it on to where the step is
pinned now.
"""

from __future__ import annotations

from typing import Any

from droplet.graph import BEGIN
from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.store.memory import MemoryKV
from droplet.store.metadata import Metadata
from droplet.worker import batching, dags
from tests.unit.helpers import NAMES, create_function, metadata, worker_state
from tests.unit.inprocess import Fleet
from tests.unit.test_worker_dags import schedule_of, trigger


def _gpu_dag() -> pb.Dag:
    dag = pb.Dag(name="d", functions=["g"])
    dag.function_resources["g"].amounts["gpu"] = 1
    return dag


def doubled(lib: Any, x: int) -> int:
    return x * 2


def test_a_trigger_of_a_gpu_function_on_a_worker_without_gpu_goes_back_unrun() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), doubled, "g")
    state = worker_state(kv)  # no tags
    t = trigger(schedule_of(_gpu_dag(), {"g": [4]}), BEGIN, "g")
    out = Outbox()
    dags.on_trigger(t, state, out)
    [sent] = out.sent
    assert sent.queue == NAMES.calls and sent.message.trigger == t, "sent to the schedulers"
    assert out.durable == [] and out.replies == [] and state.calls_total == 0, "not run here"
    assert batching.batch_item(pb.Message(trigger=t), state) is None

    state.resources = {"gpu": 1.0}  # a worker with the tag runs it
    out = Outbox()
    dags.on_trigger(t, state, out)
    assert state.calls_total == 1 and not any(s.queue == NAMES.calls for s in out.sent)


def test_a_pinned_worker_keeps_running_its_own_pin_so_a_trigger_never_bounces() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), doubled, "g")
    state = worker_state(kv)
    state.pinned = ("d", "g")  # its pin could not be given up: it runs here as before
    out = Outbox()
    dags.on_trigger(trigger(schedule_of(_gpu_dag(), {"g": [4]}), BEGIN, "g"), state, out)
    assert state.calls_total == 1 and not any(s.queue == NAMES.calls for s in out.sent)


def _pinned_fleet(tags: str | None) -> tuple[Fleet, Metadata]:
    fleet = Fleet()
    fleet.register("g", doubled)
    md = Metadata(fleet.kv, fleet.settings, fleet.signer)
    pending = md.create_dag(_gpu_dag(), "test", "req", None)
    assert pending is not None and md.claim_pin("w1", "d", "g")
    assert md.mark_dag_ready(_gpu_dag(), pending)
    plain = fleet.settings
    fleet.settings = plain.with_(worker_resources=tags)  # the restarted process's tags
    fleet.start_worker("w1")
    fleet.settings = plain
    return fleet, md


def test_a_worker_restarted_without_the_tags_gives_up_its_pin() -> None:
    fleet, md = _pinned_fleet(None)
    assert fleet.workers["w1"].service.state.pinned is None
    assert md.pin_of("w1") is None, "the pin is released: the schedulers pin it elsewhere"


def test_a_worker_restarted_with_the_tags_keeps_its_pin() -> None:
    fleet, md = _pinned_fleet("gpu=1")
    assert fleet.workers["w1"].service.state.pinned == ("d", "g")
    assert md.pin_of("w1") is not None
