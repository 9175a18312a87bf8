"""Attack on fda1feb (a function that replaces the worker's SIGTERM, SIGINT or SIGUSR2 handler
gets it put back when it returns): user code also runs when a function is loaded, before any
call: a class's `__init__` (where the README says to load what a function needs, a library
that installs its own handlers, say) and whatever unpickling its body imports. A handler
replaced there was never put back, and became "the worker's" that each call then kept: the
worker ignored SIGTERM (or stopped interrupting cancelled calls) for good."""

from __future__ import annotations

import signal
from typing import Any

import cloudpickle

from droplet.proto import pb
from droplet.store.memory import MemoryKV
from droplet.worker.executor import run_function
from droplet.worker.handlers import run
from tests.unit.helpers import metadata, worker_state
from tests.worker_signals import worker_handler


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
        assert signal.getsignal(signal.SIGTERM) is worker_handler, "SIGTERM left ignored"


def test_a_function_that_puts_pythons_ctrl_c_handler_back_and_raises_keyboardinterrupt(
        worker_handlers: None) -> None:
    """48d1448: a KeyboardInterrupt a function raises is its failure, unless it is a real
    Ctrl-C, which user_failure tells by Python's own SIGINT handler being in place. It read
    the handler the function left (fda1feb puts the worker's back only afterwards): a
    function that restored Python's default one (a library undoing its own) and raised
    KeyboardInterrupt exited the worker, then each worker its call was redelivered to."""
    def restores_and_raises(lib: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt

    value, _ = run_function(restores_and_raises, None, [])
    assert value.type == pb.ERROR
    assert pb.ErrorInfo.FromString(value.body).code == pb.EXECUTION_ERROR
    assert signal.getsignal(signal.SIGINT) is worker_handler
