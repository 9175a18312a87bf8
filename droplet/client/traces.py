"""The client's half of tracing: a root span per call, ended when its answer arrives.

Why a registry keyed by call id: answers come back on the reply pump's thread, in any order, and
the stages of a call are only known once its answer brings the stamps of every party it went
through. A call never answered (its future dropped, an `exec_func` nobody waits on) must not
keep its span forever: the registry is bounded, and the oldest span is ended as unanswered when
it is full, or when the call's future is forgotten.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from droplet.proto import pb
from droplet.tracing import Tracing

MAX_OPEN = 100_000


class CallTraces:
    def __init__(self, tracing: Tracing, max_open: int = MAX_OPEN) -> None:
        self.tracing = tracing
        self.enabled = tracing.enabled  # read on every call: an attribute, not a property
        self._max_open = max_open
        self._lock = threading.Lock()
        self._open: OrderedDict[str, Any] = OrderedDict()

    def begin(self, call_id: str, name: str, trace: Any, carrier: Any) -> None:
        """Stamps the send and starts the call's span (its context goes in `carrier`)."""
        if not len(trace):
            trace.add(stage="client.send", at_s=time.time())
        span = self.tracing.start_call(name, carrier)
        with self._lock:
            self._open[call_id] = span
            overflow = len(self._open) > self._max_open
            oldest = self._open.popitem(last=False)[1] if overflow else None
        if oldest is not None:
            self.tracing.finish_call(oldest, [], "no answer came while it was traced")

    def answered(self, call_id: str, response: pb.GenericResponse) -> None:
        with self._lock:
            span = self._open.pop(call_id, None)
        if span is None:
            return
        error = None if response.success else f"{pb.ErrorCode.Name(response.error)}: " \
                                               f"{response.message}"
        if response.HasField("value") and response.value.type == pb.ERROR:
            info = pb.ErrorInfo.FromString(response.value.body)
            error = f"{pb.ErrorCode.Name(info.code)}: {info.message}"
        self.tracing.finish_call(span, [(s.stage, s.at_s) for s in response.trace], error)

    def forget(self, call_id: str) -> None:
        with self._lock:
            span = self._open.pop(call_id, None)
        if span is not None:
            self.tracing.finish_call(span, [], "the caller stopped waiting for the answer")
