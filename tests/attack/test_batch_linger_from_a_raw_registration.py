"""Attack: a registration that did not go through this client's checks (another client
version, a hand-made record) with a batch linger of infinity (or 1e9 s): the worker's
gathering deadline never came, and over RabbitMQ `poll(inf)` blocks until another delivery
arrives, so a lone call waited as long as traffic stayed away and the worker with it (the stub
broker raises on an infinite wait, so in-process the call ran alone after a warning). The
worker now reads a linger out of range as the default (NaN, negative) or as the longest the
client allows (10 s): test_a_linger_out_of_range_is_read_within_range failed before."""

from __future__ import annotations

import math
from typing import Any

import cloudpickle
import pytest

from droplet.proto import pb
from droplet.resources import DEFAULT_LINGER_S, MAX_LINGER_S
from droplet.store.metadata import Metadata
from droplet.worker import batching
from droplet.worker.functions import LoadedFunction
from tests.unit.inprocess import Fleet
from tests.unit.test_inprocess_faults import assert_one_outcome_each


def tripled(lib: Any, batch: list[tuple[int]]) -> list[int]:
    return [x * 3 for (x,) in batch]


@pytest.mark.parametrize(("raw", "read"), [(math.nan, DEFAULT_LINGER_S),
                                           (-1.0, DEFAULT_LINGER_S),
                                           (math.inf, MAX_LINGER_S), (1e9, MAX_LINGER_S),
                                           (0.02, 0.02)])
def test_a_linger_out_of_range_is_read_within_range(raw: float, read: float) -> None:
    spec = pb.Function(name="b", batching=True, batch_linger_s=raw)
    function = LoadedFunction(name="b", spec=spec, run=tripled)
    assert batching.linger_s(function) == read


@pytest.mark.timeout(60)
def test_a_lone_call_of_a_function_registered_with_an_infinite_linger_runs() -> None:
    """It waits the longest linger allowed (10 s) for company, then runs alone."""
    fleet = Fleet()
    fleet.start_worker("w1")
    Metadata(fleet.kv, fleet.settings, fleet.signer).put_function(pb.Function(
        name="b", body=cloudpickle.dumps(tripled), batching=True, batch_size=8,
        batch_linger_s=math.inf))
    fleet.workers["w1"].service.state.batching.add("b")
    calls = [fleet.call("b", 5, queue=fleet.names.worker("w1"))]
    fleet.step("w1")  # gathers for 10 s (forever before), runs the batch of one, answers
    fleet.run_until_quiet()
    assert_one_outcome_each(fleet, calls)
    assert fleet.stored(calls[0]) == 15
