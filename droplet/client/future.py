"""DropletFuture: the result of a call, pushed to the client or read from the store."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from droplet.errors import (
    DropletError,
    DropletTimeoutError,
    InvalidArgumentError,
    error_from_info,
)
from droplet.proto import pb
from droplet.proto.replies import error_response
from droplet.store import serializer

if TYPE_CHECKING:
    from droplet.client.client import DropletClient

_STORE_CHECK_S = 2.0
_UNSET = object()


def checked_timeout(timeout: Any) -> float:
    """get(timeout=...) takes seconds as a number: a string was a TypeError from inside the
    wait ("unsupported operand type(s) for +"), NaN waited with no limit. Negative: no wait."""
    if not isinstance(timeout, bool) and isinstance(timeout, int | float):
        try:
            seconds = float(timeout)
        except OverflowError:  # an int past any float (10**400): as good as forever
            seconds = math.inf
        if not math.isnan(seconds):
            return seconds
    raise InvalidArgumentError(
        f"get(timeout=...) takes a number of seconds (or None for result_timeout_s), "
        f"not {timeout!r}")


class DropletFuture:
    """The eventual outcome of one call.

    `get()` returns the value or raises the call's DropletError. The worker pushes the outcome
    to this client as soon as it is stored; if that push is lost (the client reconnected), the
    future reads the outcome of THIS call from the store (results/<call id>), never whatever an
    output key holds now (another call may have written it since). `response_id` is the key
    the result can be read under with get_object (the output key, or the call's own key).
    """

    def __init__(
        self,
        response_id: str,
        client: DropletClient,
        call_id: str = "",
        on_revision: Callable[[int], None] | None = None,
        stored: bool = True,
        due_at: float = 0.0,
    ) -> None:
        self.response_id = response_id
        self.call_id = call_id or response_id
        self._on_revision = on_revision
        self._stored = stored  # False: a direct response, nothing in the store to look for
        self.due_at = due_at  # a delayed call: not run before this unix time
        self.trace: list[tuple[str, float]] = []  # (stage, unix time) of a traced call
        self._client = client
        self._value: Any = _UNSET
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"DropletFuture({self.response_id!r}, {state})"

    def __reduce__(self) -> Any:
        """Refused with a TypeError that says what to pass instead (pickle's own named a
        lock deep inside the client: "cannot pickle '_thread.lock' object")."""
        raise TypeError(
            "a DropletFuture cannot be pickled (it waits on its client's connection): pass "
            f"its call_id ({self.call_id!r}: client.cancel) or response_id (client.get_object "
            "reads its stored result) to the other process")

    def done(self) -> bool:
        return self._value is not _UNSET or self._error is not None

    def get(self, timeout: float | None = None) -> Any:
        """The result; raises DropletTimeoutError (a TimeoutError) after `timeout` seconds
        (default: settings.result_timeout_s)."""
        if self._value is _UNSET and self._error is None:  # not done() (one call less)
            limit = self._client.settings.result_timeout_s if timeout is None else (
                checked_timeout(timeout))
            if timeout is None and self.due_at:  # the default waits out the delay too
                limit += max(0.0, self.due_at - time.time())
            self._client.batcher.flush()
            self._await(limit)
        if self._error is not None:
            raise self._error
        return self._value

    result = get

    def cancel(self) -> bool:
        """Cancels the call (client.cancel): True when its outcome is CANCELLED, and then
        get() raises droplet.CancelledError; False when it finished first (get() returns its
        outcome)."""
        if self.done():
            return self.cancelled()
        if not self._client.cancel(self.call_id):
            return False
        response = error_response(self.response_id, pb.CANCELLED, "the call was cancelled",
                                  call_id=self.call_id)
        self._client.pump.answer(self.call_id, response)  # wakes a get() waiting elsewhere
        self._settle_value(response.value)
        return True

    def cancelled(self) -> bool:
        return self._error is not None and getattr(self._error, "code", 0) == pb.CANCELLED

    def _await(self, timeout_s: float) -> None:
        pump = self._client.pump
        deadline = time.monotonic() + timeout_s
        generation = pump.generation
        next_store_check = time.monotonic() + _STORE_CHECK_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DropletTimeoutError(
                    f"no result for {self.response_id!r} within {timeout_s:g}s"
                )
            slice_s = min(remaining, max(0.0, next_store_check - time.monotonic()))
            response = pump.wait(self.call_id, slice_s, self.done)
            if response is not None:
                self._settle_response(response)
                return
            if self.done():  # another thread's get() of this future took the answer: a
                return  # direct call's other getters waited out their timeouts
            if pump.closed:  # (wait returns at once then: this loop spun a core till timeout)
                raise DropletError(
                    f"{pump.closed_reason} ({self.response_id!r} was not answered)")
            if not self._stored:
                continue
            if pump.generation != generation or time.monotonic() >= next_store_check:
                generation = pump.generation
                next_store_check = time.monotonic() + _STORE_CHECK_S
                stored = self._client.values.outcome(self.call_id)
                if stored is not None:
                    pump.forget(self.call_id)
                    self._settle_value(stored)
                    return

    def _settle_response(self, response: pb.GenericResponse) -> None:
        if len(response.trace):  # traced calls only
            self.trace = [(s.stage, s.at_s) for s in response.trace]
        if self._on_revision is not None and response.revision:
            self._on_revision(response.revision)
        if response.stored:
            stored = self._client.values.outcome(self.call_id)
            if stored is None:
                raise DropletTimeoutError(f"result {self.response_id!r} has expired")
            self._settle_value(stored)
        else:
            self._settle_value(response.value)

    def _settle_value(self, value: pb.Value) -> None:
        try:
            loaded = serializer.load(value)
        except Exception as exc:  # a result this process cannot load (a module it lacks):
            self._error = exc  # its outcome, raised by every get(); the next get() used to
            return  # wait again for an answer already taken (a direct call's: timed out)
        if isinstance(loaded, pb.ErrorInfo):
            self._error = error_from_info(loaded)
        else:
            self._value = loaded
