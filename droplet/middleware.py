"""Middleware: the one extension point of schedulers and workers.

The message cycle tells every middleware what it handles and how it ended, and the worker
tells it about every function it runs. Metrics are middleware; so is anything that wants to
trace calls or record them for a dashboard. A middleware must be quick and must not raise:
it runs on the hot path, and an exception in it is logged and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from droplet.proto import pb

log = logging.getLogger(__name__)


class Middleware:
    """Override what you need; every hook does nothing by default."""

    def after_message(self, kind: str, error_code: int) -> None:
        """A message was handled (error_code NO_ERROR) or refused."""

    def before_run(self, function: str) -> None:
        """A function is about to run, on this thread."""

    def after_run(self, function: str, seconds: float, outcome: pb.Value) -> None:
        """A function ran, with this outcome (an ERROR value when it failed)."""

    def after_outcome(self, call_id: str, outcome: pb.Value) -> None:
        """A call's outcome was delivered (stored, when the call stores it)."""


class Chain(Middleware):
    """Several middlewares, each called in turn; one that raises is logged and skipped."""

    def __init__(self, middlewares: Sequence[Middleware] = ()) -> None:
        self.middlewares = tuple(middlewares)
        # Each hook calls only the middlewares that override it: the hooks run for every
        # message and call, and most middlewares implement one or two of them.
        self._on_message = _overriding(self.middlewares, "after_message")
        self._on_start = _overriding(self.middlewares, "before_run")
        self._on_run = _overriding(self.middlewares, "after_run")
        self._on_outcome = _overriding(self.middlewares, "after_outcome")

    def after_message(self, kind: str, error_code: int) -> None:
        for middleware in self._on_message:
            try:
                middleware.after_message(kind, error_code)
            except Exception:
                log.exception("middleware %r failed", middleware)

    def before_run(self, function: str) -> None:
        for middleware in self._on_start:
            try:
                middleware.before_run(function)
            except Exception:
                log.exception("middleware %r failed", middleware)

    def after_run(self, function: str, seconds: float, outcome: pb.Value) -> None:
        for middleware in self._on_run:
            try:
                middleware.after_run(function, seconds, outcome)
            except Exception:
                log.exception("middleware %r failed", middleware)

    def after_outcome(self, call_id: str, outcome: pb.Value) -> None:
        for middleware in self._on_outcome:
            try:
                middleware.after_outcome(call_id, outcome)
            except Exception:
                log.exception("middleware %r failed", middleware)


def _overriding(middlewares: Sequence[Middleware], hook: str) -> tuple[Middleware, ...]:
    """Those whose `hook` is not Middleware's no-op (one without it at all is kept: calling
    it fails, and is logged, as it always did)."""
    default = getattr(Middleware, hook)
    return tuple(m for m in middlewares
                 if getattr(getattr(m, hook, None), "__func__", None) is not default)
