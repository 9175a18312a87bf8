"""User code that raises SystemExit, KeyboardInterrupt or GeneratorExit outside the function
body (a result's __reduce__, an argument's loading, a class's __init__, a speculative result's
__eq__) or KeyboardInterrupt inside it: the call fails with an error naming it, and nothing
of it reaches the worker's loop. Each used to exit the worker, then every worker the call was
redelivered to, until it was dead-lettered as poison (tests/attack/test_hostile_user_code.py
shows it on real workers)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from droplet.client.registration import function_spec
from droplet.errors import DropletError, ExecutionError, InvalidArgumentError, user_failure
from droplet.proto import pb
from droplet.store import serializer
from droplet.worker.copies import _equal
from droplet.worker.executor import TimeLimitExceeded, run_function
from droplet.worker.functions import _build


def _exit_on_load() -> None:
    sys.exit("exit on load")


class ExitsWhenPickled:
    def __reduce__(self) -> Any:
        raise SystemExit("hostile reduce")


class ExitsWhenLoaded:
    def __reduce__(self) -> Any:
        return (_exit_on_load, ())


class ExitsWhenCompared:
    def __eq__(self, other: object) -> bool:
        raise SystemExit("hostile eq")

    __hash__ = object.__hash__


class ExitsInInit:
    def __init__(self) -> None:
        raise SystemExit("init exit")

    def run(self, lib: Any) -> int:
        return 1


@pytest.fixture
def stop_handler() -> Iterator[None]:
    """SIGINT handled as `droplet worker` handles it (it stops the service by itself)."""
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _error(value: pb.Value) -> pb.ErrorInfo:
    loaded = serializer.load(value)
    assert isinstance(loaded, pb.ErrorInfo), loaded
    return loaded


def _raise(exc: BaseException) -> Any:
    raise exc


def test_a_functions_keyboard_interrupt_is_its_error_where_sigint_stops_the_worker(
        stop_handler: None) -> None:
    value, _ = run_function(lambda _lib: _raise(KeyboardInterrupt("mine")), None, [])
    error = _error(value)
    assert error.code == pb.EXECUTION_ERROR
    assert "KeyboardInterrupt: mine" in error.message


def test_ctrl_c_still_stops_a_process_that_kept_pythons_sigint_handler() -> None:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_function(lambda _lib: _raise(KeyboardInterrupt()), None, [])
        assert not user_failure(KeyboardInterrupt())
        outcome: list[bool] = []  # off the main thread no Ctrl-C is ever raised
        thread = threading.Thread(target=lambda: outcome.append(user_failure(
            KeyboardInterrupt())))
        thread.start()
        thread.join()
        assert outcome == [True]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_result_whose_pickling_exits_fails_its_call() -> None:
    value, _ = run_function(lambda _lib: ExitsWhenPickled(), None, [])
    error = _error(value)
    assert error.code == pb.EXECUTION_ERROR
    assert "cannot be serialized" in error.message and "SystemExit: hostile reduce" in (
        error.message)
    with pytest.raises(InvalidArgumentError, match="SystemExit"):
        serializer.dump(ExitsWhenPickled())


def test_a_value_whose_loading_exits_raises_an_error() -> None:
    value = serializer.dump(ExitsWhenLoaded())
    with pytest.raises(DropletError, match="SystemExit: exit on load") as raised:
        serializer.load(value)
    assert raised.value.code == pb.EXECUTION_ERROR


def test_the_workers_own_interruptions_pass_through() -> None:
    with pytest.raises(TimeLimitExceeded):
        serializer.dump(type("Slow", (), {"__reduce__": lambda self: _raise(
            TimeLimitExceeded("limit"))})())
    assert not user_failure(TimeLimitExceeded())


def test_a_class_whose_init_exits_fails_to_load() -> None:
    spec = function_spec(ExitsInInit, "c", (), 0.0, 0, (Exception,), 1.0, {}, None)
    with pytest.raises(ExecutionError, match="init exit"):
        _build(spec)


def test_a_speculative_result_whose_eq_exits_is_not_equal() -> None:
    assert _equal(ExitsWhenCompared(), serializer.dump(1)) is False
