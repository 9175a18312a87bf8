"""A function re-registered while a worker loads it (worker/functions.py FunctionCache): the
functions watch invalidates the name between the worker's read of the old body and the moment
it caches what it read, so the old body stayed cached, and every later call or DAG step on
that worker (a pinned one gets no schedule notice now, and a notice only read the cache
anyway) ran the old body until the next re-registration."""

from __future__ import annotations

import pickle

import pytest

from droplet.proto import pb
from droplet.worker.functions import FunctionCache

pytestmark = pytest.mark.timeout(10)


def _old(*_: object) -> str:
    return "old"


def _new(*_: object) -> str:
    return "new"


def test_a_body_replaced_during_its_load_is_not_kept() -> None:
    registered = {"f": pb.Function(name="f", body=pickle.dumps(_old))}
    cache: FunctionCache

    def loader(name: str) -> pb.Function | None:
        spec = registered[name]
        if spec.body == pickle.dumps(_old):  # the re-registration lands mid-load
            registered[name] = pb.Function(name="f", body=pickle.dumps(_new))
            cache.invalidate(name)  # what the functions watch does
        return spec

    cache = FunctionCache(loader)
    first = cache.get("f")
    assert first is not None and first.run() == "old"  # read before the change: fair
    again = cache.get("f")
    assert again is not None and again.run() == "new", "the replaced body stayed cached"
