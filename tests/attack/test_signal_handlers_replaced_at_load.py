"""Attack on fda1feb (a function that replaces the worker's SIGTERM, SIGINT or SIGUSR2 handler
gets it put back when it returns): user code also runs when a function is loaded, before any
call: a class's `__init__` (where the README says to load what a function needs, a library
that installs its own handlers, say) and whatever unpickling its body imports. A handler
replaced there was never put back, and became "the worker's" that each call then kept: the
worker ignored SIGTERM (or stopped interrupting cancelled calls) for good."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest

from droplet.proto import pb
from droplet.store.memory import MemoryKV
from droplet.worker.cancel import INTERRUPT_SIGNAL
from droplet.worker.handlers import run
from tests.unit.helpers import metadata, worker_state

SIGNALS = (signal.SIGTERM, signal.SIGINT, INTERRUPT_SIGNAL)


def _worker_handler(_signum: int, _frame: Any) -> None:
    """Stands for the worker's own (cli/services.py, worker/cancel.py)."""


@pytest.fixture
def worker_handlers() -> Iterator[None]:
    previous = [signal.signal(signum, _worker_handler) for signum in SIGNALS]
    try:
        yield
    finally:
        for signum, handler in zip(SIGNALS, previous, strict=True):
            signal.signal(signum, handler)


class IgnoresTerm:
    """A class-based function whose set-up (a library's) ignores SIGTERM."""

    def __init__(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def run(self, lib: Any) -> str:
        return "ran"


def test_a_handler_a_class_replaced_when_it_was_loaded_is_put_back(
        worker_handlers: None) -> None:
    kv = MemoryKV()
    state = worker_state(kv)
    metadata(kv).put_function(pb.Function(name="ignores", body=cloudpickle.dumps(IgnoresTerm),
                                          is_class=True))
    for _ in range(2):  # loaded by the first call, then run again as loaded
        outcome = run(state, "ignores", [], [])
        assert outcome.value.type != pb.ERROR
        assert signal.getsignal(signal.SIGTERM) is _worker_handler, "SIGTERM left ignored"
