"""Running one user function: arguments in, a result Value or an ERROR Value out.

Nothing a function does can kill the worker: exceptions (SystemExit, KeyboardInterrupt and a
function's own BaseException subclasses included; only a real Ctrl-C stops the worker, see
errors.user_failure) become EXECUTION_ERROR values carrying the message and the traceback,
and so does a result whose pickling raises any of them. A time limit is enforced with
SIGALRM when running on the main thread, which interrupts sleeps and pure-Python loops alike;
a cancel interrupts the same way (worker/cancel.py), through the `interrupt` context.
"""

from __future__ import annotations

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
from droplet.worker import own_signals
from droplet.worker.cancel import CallCancelled, cancelled_value


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


def run_function(
    fn: Callable[..., Any], lib: Any, args: list[Any], time_limit_s: float = 0.0,
    interrupt: AbstractContextManager[None] | None = None,
) -> tuple[pb.Value, tuple[str, ...]]:
    """The outcome, and when the function raised, the qualified names of its exception's
    classes (so that retries can match `retry_on`). On the main thread, the worker's signal
    handlers the function replaced are put back afterwards (own_signals.py)."""
    if not own_signals.on_main_thread():
        return _run(fn, lib, args, time_limit_s, interrupt)
    handlers = own_signals.current()
    try:
        return _run(fn, lib, args, time_limit_s, interrupt, handlers)
    finally:
        own_signals.put_back(handlers)


def _run(
    fn: Callable[..., Any], lib: Any, args: list[Any], time_limit_s: float,
    interrupt: AbstractContextManager[None] | None, handlers: list[Any] | None = None,
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
        if handlers is not None:  # first: user_failure reads the worker's SIGINT handler, not
            own_signals.put_back(handlers)  # Python's that the function may have put back
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
