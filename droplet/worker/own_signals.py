"""The worker's own signal handlers, put back after user code that replaced them.

SIGTERM and SIGINT stop the worker, SIGUSR2 interrupts a cancelled call. User code may replace
them (signal.signal(SIGTERM, SIG_IGN), a library installing its own): the worker then no
longer stopped on SIGTERM (its supervisor's kill timeout did), or no longer interrupted a
cancelled call (its keeper exited it after a grace). User code runs in a call
(executor.run_function) and when its function is loaded (functions.py: a class's __init__,
whatever unpickling the body imports), before the first call: both put them back. Read as
plain numbers through _signal: signal.getsignal converts every answer to an enum, which cost
some 18 us a call for the six reads.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # (signal.getsignal, without its enums)
import logging
import signal
import threading
from typing import Any

from droplet.worker.cancel import INTERRUPT_SIGNAL

log = logging.getLogger(__name__)

_WORKERS_SIGNALS = (int(signal.SIGTERM), int(signal.SIGINT), int(INTERRUPT_SIGNAL))


def on_main_thread() -> bool:
    """Handlers are set on the main thread only: user code elsewhere cannot replace them."""
    return threading.get_ident() == threading.main_thread().ident


def current() -> list[Any]:
    """The handlers now, before user code runs (on the main thread)."""
    return [_signal.getsignal(signum) for signum in _WORKERS_SIGNALS]


def put_back(handlers: list[Any]) -> None:
    """Puts back each of `handlers` (current()'s) that user code replaced since, saying so."""
    for signum, handler in zip(_WORKERS_SIGNALS, handlers, strict=True):
        if handler is not None and _signal.getsignal(signum) is not handler:
            log.warning("a function replaced the worker's handler of %s: put back",
                        signal.Signals(signum).name)
            signal.signal(signum, handler)
