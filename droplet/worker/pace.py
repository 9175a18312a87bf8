"""How long each function usually takes on this worker: what lets the message cycle batch the
outcomes of quick calls (one etcd write for many) without making any result wait for a slow
call that follows it in the same delivery.

A middleware: it learns from every run (an exponentially weighted mean per function) and
answers `expect_slow(message)` before a message runs. A function it has not seen run yet
counts as slow, so a result is never held back by a first run of unknown length. A run counts
without the time its thread waited for a core (threadclock.py): on a crowded host, a quick
function descheduled mid-run is not slow, and taking it for slow would split every commit
after it.
"""

from __future__ import annotations

from droplet import threadclock
from droplet.graph import OUTPUT
from droplet.middleware import Middleware
from droplet.proto import pb

SLOW_S = 0.002  # as long as the cycle lingers before committing anyway
QUICK_S = 0.001  # a function this quick may travel in big envelopes (client/routing.py)
QUICK_LISTED = 64  # quick functions a status record names at most
LONG_S = 0.02  # the keeper's long-run mark (keeper.py flush_after_s)
_WEIGHT = 0.2


class Pace(Middleware):
    def __init__(self, slow_s: float = SLOW_S) -> None:
        self._slow_s = slow_s
        self._mean_s: dict[str, float] = {}
        self._started: tuple[str, threadclock.Mark] | None = None  # the run going on

    def before_run(self, function: str) -> None:
        self._started = (function, threadclock.mark())

    def after_run(self, function: str, seconds: float, outcome: pb.Value) -> None:
        started, self._started = self._started, None
        if started is not None and started[0] == function and seconds > self._slow_s:
            seconds = min(seconds, threadclock.own_wall_s(started[1]))  # (a batch: no start)
        mean = self._mean_s.get(function)
        self._mean_s[function] = seconds if mean is None else mean + _WEIGHT * (seconds - mean)

    def expect_slow(self, message: pb.Message) -> bool:
        """Whether the message may run long: its function is slow here, or not known yet."""
        name = _function_of(message)
        if name is None:
            return False
        mean = self._mean_s.get(name)
        return mean is None or mean > self._slow_s

    def quick_functions(self) -> list[str]:
        """The functions that usually run in under QUICK_S here, quickest first (at most
        QUICK_LISTED): the worker's status record names them, and clients send their calls
        in bigger envelopes, where a slower one would hold the calls after it up."""
        return self._listed(quick=True)

    def slow_functions(self) -> list[str]:
        """The functions that have run here and usually take QUICK_S or more, the quickest of
        them first (at most QUICK_LISTED): the status record names them too, and a client
        sends no function in big envelopes that some worker finds slow (the envelope may
        reach it, and 64 runs of 10 ms would go one after another, none long enough for the
        keeper to hand the rest back)."""
        return self._listed(quick=False)

    def _listed(self, quick: bool) -> list[str]:
        """The quick (or the other) functions, quickest first, at most QUICK_LISTED."""
        chosen = sorted((mean, name) for name, mean in self._mean_s.items()
                        if (mean < QUICK_S) == quick)
        return [name for _, name in chosen[:QUICK_LISTED]]

    def known_long(self, message: pb.Message) -> bool:
        """Whether the message's function usually runs past the keeper's long-run mark here
        (LONG_S; not merely unknown, nor a few ms)."""
        name = _function_of(message)
        mean = None if name is None else self._mean_s.get(name)
        return mean is not None and mean > LONG_S


def _function_of(message: pb.Message) -> str | None:
    kind = message.WhichOneof("kind")
    if kind == "call":
        return message.call.name
    if kind == "trigger" and message.trigger.target_function != OUTPUT:
        return message.trigger.target_function
    return None
