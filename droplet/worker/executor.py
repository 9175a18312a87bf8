"""Running one user function: arguments in, a result Value or an ERROR Value out.

Nothing a function does can kill the worker: exceptions (SystemExit, KeyboardInterrupt and a
function's own BaseException subclasses included; only a real Ctrl-C stops the worker, see
errors.user_failure) become EXECUTION_ERROR values carrying the message and the traceback,
and so does a result whose pickling raises any of them. A time limit is enforced with
SIGALRM when running on the main thread, which interrupts sleeps and pure-Python loops alike;
a cancel interrupts the same way (worker/cancel.py), through the `interrupt` context.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # (signal.getsignal, without its enums)
import logging
import signal
import threading
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from droplet.errors import (
    Interruption,
    InvalidArgumentError,
    SnapshotExpired,
    qualified_names,
    user_failure,
)
from droplet.proto import pb
from droplet.proto.replies import error_value
from droplet.store import serializer
from droplet.worker.cancel import INTERRUPT_SIGNAL, CallCancelled, cancelled_value

log = logging.getLogger(__name__)


class TimeLimitExceeded(Interruption):
    """Raised inside a function past its time limit; BaseException so that a function's own
    `except Exception` does not swallow it."""


class _Unlimited:
    """No limit: entered around every call without one (shared; a generator-based context
    costs six Python calls a call, this two)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


_UNLIMITED = _Unlimited()


class _TimeLimit:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.previous: Any = None

    def __enter__(self) -> None:
        seconds = self.seconds

        def expire(_signum: int, _frame: Any) -> None:
            raise TimeLimitExceeded(f"the function ran past its time limit of {seconds:g}s")

        self.previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def __exit__(self, _type: type[BaseException] | None, _exc: BaseException | None,
                 _tb: TracebackType | None) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)


def time_limit(seconds: float) -> AbstractContextManager[None]:
    """SIGALRM after `seconds` (> 0), on the main thread only; elsewhere no limit."""
    if seconds > 0 and threading.get_ident() == threading.main_thread().ident:
        return _TimeLimit(seconds)
    return _UNLIMITED


# The worker's own handlers, which a function may replace (signal.signal(SIGTERM, SIG_IGN),
# a library installing its own): SIGTERM and SIGINT stop it, SIGUSR2 interrupts a cancelled
# call. Replaced, the worker no longer stopped on SIGTERM (its supervisor's kill timeout
# did), or no longer interrupted a cancelled call (its keeper exited it after a grace).
# (As plain numbers, read through _signal: signal.getsignal converts every answer to an enum,
# which cost some 18 us a call for the six reads.)
_WORKERS_SIGNALS = (int(signal.SIGTERM), int(signal.SIGINT), int(INTERRUPT_SIGNAL))


def run_function(
    fn: Callable[..., Any], lib: Any, args: list[Any], time_limit_s: float = 0.0,
    interrupt: AbstractContextManager[None] | None = None,
) -> tuple[pb.Value, tuple[str, ...]]:
    """The outcome, and when the function raised, the qualified names of its exception's
    classes (so that retries can match `retry_on`). On the main thread, the worker's signal
    handlers the function replaced are put back afterwards."""
    if threading.get_ident() != threading.main_thread().ident:
        return _run(fn, lib, args, time_limit_s, interrupt)
    handlers = [_signal.getsignal(signum) for signum in _WORKERS_SIGNALS]
    try:
        return _run(fn, lib, args, time_limit_s, interrupt)
    finally:
        for signum, handler in zip(_WORKERS_SIGNALS, handlers, strict=True):
            if handler is not None and _signal.getsignal(signum) is not handler:
                log.warning("a function replaced the worker's handler of %s: put back",
                            signal.Signals(signum).name)
                signal.signal(signum, handler)


def _run(
    fn: Callable[..., Any], lib: Any, args: list[Any], time_limit_s: float,
    interrupt: AbstractContextManager[None] | None,
) -> tuple[pb.Value, tuple[str, ...]]:
    try:
        if time_limit_s > 0:
            with time_limit(time_limit_s), interrupt or _UNLIMITED:
                result = fn(lib, *args)
        else:  # no limit (the default): nothing to enter for it
            with interrupt or _UNLIMITED:
                result = fn(lib, *args)
    except CallCancelled as exc:
        return cancelled_value(str(exc)), ()
    except TimeLimitExceeded as exc:
        value = error_value(pb.TIMEOUT, str(exc), traceback.format_exc(), "TimeLimitExceeded")
        return value, ()
    except SnapshotExpired as exc:
        value = error_value(pb.CONFLICT, f"the call's snapshot is gone: {exc}", "",
                            "SnapshotExpired")
        return value, ()
    except BaseException as exc:  # SystemExit, GeneratorExit, a function's own BaseException
        if not user_failure(exc):
            raise  # the worker is being stopped (Ctrl-C): not the function's outcome
        names = qualified_names(type(exc))
        value = error_value(
            pb.EXECUTION_ERROR, f"{type(exc).__name__}: {exc}", traceback.format_exc(), names[0]
        )
        return value, names
    try:
        return serializer.dump(result), ()
    except InvalidArgumentError as exc:
        return error_value(pb.EXECUTION_ERROR, f"the result cannot be serialized: {exc}"), ()
