"""worker/pace.py: which functions the cycle may batch the outcomes of. A function is slow
when its runs take long of their own, not when the host keeps its worker off a core."""

from __future__ import annotations

import time
from typing import Any

import pytest

from droplet import threadclock
from droplet.middleware import Chain, Middleware
from droplet.proto import pb
from droplet.worker.pace import QUICK_LISTED, QUICK_S, SLOW_S, Pace


def _call(name: str) -> pb.Message:
    return pb.Message(call=pb.FunctionCall(name=name))


def _run(pace: Chain, name: str, seconds_s: float) -> None:
    started = time.monotonic()
    pace.before_run(name)
    time.sleep(seconds_s)
    pace.after_run(name, time.monotonic() - started, pb.Value())


def test_a_function_not_seen_yet_is_slow_and_a_quick_one_is_not() -> None:
    pace = Pace()
    assert pace.expect_slow(_call("f"))
    Chain([pace]).after_run("f", SLOW_S / 10, pb.Value())
    assert not pace.expect_slow(_call("f"))


def test_a_run_that_sleeps_is_slow() -> None:
    pace = Pace()
    _run(Chain([pace]), "f", SLOW_S * 5)
    assert pace.expect_slow(_call("f"))


def test_a_run_kept_off_its_core_is_not_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's queued time (faked: the sleep stands for a crowded host's run queue) is
    left out of what the run took."""
    start = time.monotonic()
    monkeypatch.setattr(threadclock, "queued_s", lambda: time.monotonic() - start)
    pace = Pace()
    _run(Chain([pace]), "f", SLOW_S * 5)
    assert not pace.expect_slow(_call("f"))


def test_a_run_without_a_start_counts_its_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's runs (worker/batching.py) report no start: their time is taken as given."""
    start = time.monotonic()
    monkeypatch.setattr(threadclock, "queued_s", lambda: time.monotonic() - start)
    pace = Pace()
    Chain([pace]).after_run("f", SLOW_S * 5, pb.Value())
    assert pace.expect_slow(_call("f"))


def test_before_run_reaches_only_the_middleware_that_wants_it_and_never_raises(
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Any] = []

    class Broken(Middleware):
        def before_run(self, function: str) -> None:
            raise RuntimeError("boom")

    class Counting(Middleware):
        def before_run(self, function: str) -> None:
            seen.append(function)

    chain = Chain([Broken(), Middleware(), Counting()])
    chain.before_run("f")
    assert seen == ["f"]
    assert "boom" in caplog.text


def test_quick_functions_are_those_under_a_millisecond_quickest_first_and_at_most_64() -> None:
    pace = Pace()
    chain = Chain([pace])
    for name, seconds in (("b", QUICK_S / 2), ("a", QUICK_S / 5), ("slow", QUICK_S * 3)):
        chain.after_run(name, seconds, pb.Value())
    assert pace.quick_functions() == ["a", "b"]
    for _ in range(10):  # "b" turned slow: its mean follows
        chain.after_run("b", QUICK_S * 5, pb.Value())
    assert pace.quick_functions() == ["a"]
    for i in range(QUICK_LISTED + 10):
        chain.after_run(f"f{i}", QUICK_S / 10, pb.Value())
    assert len(pace.quick_functions()) == QUICK_LISTED
