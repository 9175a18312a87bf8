"""Coalescing calls made in quick succession into one broker message.

Calls submitted back to back (`[f(x) for x in xs]`) travel together, up to `max_batch` to a
message: the broker, the scheduler and the worker then handle one message instead of many.
A call made alone (the previous one was more than `burst_gap_s` ago) goes out at once, so
one-at-a-time callers pay nothing for batching. A batched call never waits for company it is
not going to get: waiting on any future flushes at once, and anything else goes out after at
most `linger_s`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from droplet.proto import pb

Sender = Callable[[list[pb.FunctionCall]], None]


class CallBatcher:
    def __init__(
        self,
        send: Sender,
        linger_s: float = 0.001,
        max_batch: int = 64,
        burst_gap_s: float = 0.0002,
        saturated: Callable[[], bool] = lambda: False,
    ) -> None:
        self._send = send
        self._saturated = saturated
        self._linger_s = linger_s
        self._max_batch = max_batch
        self._burst_gap_s = burst_gap_s
        self._lock = threading.Lock()  # taken bare unless waiting or waking (cheaper)
        self._cond = threading.Condition(self._lock)
        self._pending: list[pb.FunctionCall] = []
        self._last_add = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._linger, daemon=True,
                                        name="droplet-call-batcher")
        self._thread.start()

    def add(self, call: pb.FunctionCall) -> None:
        now = time.monotonic()
        with self._lock:
            alone = (not self._pending and now - self._last_add > self._burst_gap_s
                     and not self._saturated())
            self._last_add = now
            if not alone:
                self._pending.append(call)
                if len(self._pending) == 1:
                    self._cond.notify()  # start the linger clock
            full = len(self._pending) >= self._max_batch
        if alone:
            self._send([call])
        elif full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            self._send(batch)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cond.notify()
        self.flush()

    def _linger(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            time.sleep(self._linger_s)
            self.flush()
