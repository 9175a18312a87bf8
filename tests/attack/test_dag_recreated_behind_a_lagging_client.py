"""A DAG deleted and registered again under the same name, with its source pinned to the same
worker, behind a client whose view (read at most once a second) still holds the old
definition: the client sends the old schedule straight to the source's worker, which holds
a pin of that very (DAG, function) and runs it, and the old schedule's downstream steps run
on workers no longer pinned to them: a call of a deleted DAG. The scheduler path would have
scheduled the new definition. The worker now compares the trigger's DAG with the one it is
pinned for (read once a pin) and hands a call of another definition to the schedulers."""

from __future__ import annotations

from typing import Any

import pytest

from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.store.metadata import Metadata
from droplet.worker import handlers
from tests.unit.test_dag_direct import RUNS, _call, _fleet

pytestmark = [pytest.mark.timeout(30)]


def third(lib: Any, *args: Any) -> Any:
    RUNS[f"third@{lib.getid()}"] += 1
    return ["third", *args]


def test_dag_recreated_behind_a_lagging_client() -> None:
    fleet, client, _, _ = _fleet(("w1", "w2", "w3"))
    try:
        assert _call(fleet, client, 1) == ["second", ["first", 1]]
        fleet.register("third", third)
        metadata = Metadata(fleet.kv, fleet.settings, fleet.signer)
        for pin in metadata.pins():  # delete_dag, behind this client's back
            handlers.unpin(pb.UnpinRequest(dag_name=pin.dag_name,
                                           function_name=pin.function_name),
                           fleet.workers[pin.worker_id].service.state)
            metadata.release_pin(pin)
        metadata.delete_dag("d")
        dag = pb.Dag(name="d", functions=["first", "third"])
        dag.connections.add(source="first", sink="third")
        pending = metadata.create_dag(dag, "test", "req2", None)
        assert pending is not None
        for function, worker in (("first", "w1"), ("third", "w3")):  # the source on w1 again
            assert metadata.claim_pin(worker, "d", function)
            assert handlers.pin(pb.PinRequest(dag_name="d", function_name=function), None,
                                None, fleet.workers[worker].service.state, Outbox())
        assert metadata.mark_dag_ready(dag, pending)
        fleet.scheduler.fleet.refresh()  # type: ignore[union-attr]
        assert _call(fleet, client, 2) == ["third", ["first", 2]]
        assert RUNS["second@w2"] == 1, "the deleted DAG's step ran again"
    finally:
        client.close()
