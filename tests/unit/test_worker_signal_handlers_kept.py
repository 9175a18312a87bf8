"""A function that replaces one of the worker's signal handlers (signal.signal(SIGTERM,
SIG_IGN), or a library installing its own) gets it put back when it returns: a worker whose
function ignored SIGTERM lived on after `kill -TERM` until its supervisor's SIGKILL, and one
whose function ignored SIGUSR2 no longer interrupted cancelled calls
(worker/executor.py run_function)."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from droplet.worker.executor import run_function
from tests.worker_signals import SIGNALS, worker_handler


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_handler_a_function_replaced_is_put_back(worker_handlers: None,
                                                   signum: int) -> None:
    def replaces(lib: Any) -> str:
        signal.signal(signum, signal.SIG_IGN)
        return "done"

    run_function(replaces, None, [])
    assert signal.getsignal(signum) is worker_handler


def test_even_when_the_function_raises(worker_handlers: None) -> None:
    def replaces_and_fails(lib: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise ValueError("and fails")

    run_function(replaces_and_fails, None, [])
    assert signal.getsignal(signal.SIGTERM) is worker_handler
