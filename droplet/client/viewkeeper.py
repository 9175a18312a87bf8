"""When a client's copy of something etcd holds (the fleet's status records, DAGs' pins) is
read again, and by which thread.

A copy is looked at again once it is a second old. Before, the call that found it so read etcd
itself: once a second, one call took an etcd round trip (or three) longer. Now the call asks
this keeper's thread for the look and goes on with what the last one found. The caller still
reads etcd itself when there is no look worth using: none was made, or the last one is older
than `stale_s` and none is under way (a client that idled for minutes would otherwise send its
first call on a view of a fleet long gone; tests/attack/test_stale_fleet_view_after_idle.py).
While the thread's look hangs (etcd slow or away), calls go on with the last one rather than
wait on etcd with it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

RECHECK_S = 1.0
STALE_S = 2.0


class ViewKeeper:
    def __init__(self, look: Callable[[], object], name: str,
                 clock: Callable[[], float] = time.monotonic, recheck_s: float = RECHECK_S,
                 stale_s: float = STALE_S) -> None:
        self.recheck_s = recheck_s  # a look is due at this age
        self.stale_s = stale_s  # ...and read by the caller at this one, if none is under way
        self._look = look  # reads etcd into the owner's copy and calls looked(); may raise
        self._name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._looked_at = -math.inf  # -inf: never read, or forgotten
        self._forgets = 0  # forget()s: a look begun before one that fails does not count
        self._due = threading.Event()
        self._asked = False  # a look is due or under way: the event is set once for it
        self.thread: threading.Thread | None = None  # started at the first look asked for
        self._closed = False

    def looked(self) -> None:
        """The owner's copy was just read (by whichever thread)."""
        with self._lock:
            self._looked_at = self._clock()

    def forget(self) -> None:
        """The copy is known wrong (this client changed what it holds): the next use reads."""
        with self._lock:
            self._looked_at = -math.inf
            self._forgets += 1

    def forgets(self) -> int:
        """How many times the copy was forgotten: a read begun before a change of it and
        finished after is not to be kept (the owner compares this before and after)."""
        return self._forgets

    def busy(self) -> bool:
        """Whether a look is asked for or under way on the keeper's thread."""
        return self._asked

    def usable(self) -> bool:
        """True: the caller goes on with the copy it has (and a look is asked for when one is
        due); False: the caller reads etcd itself, now."""
        with self._lock:
            age = self._clock() - self._looked_at
            # Forgotten: read now, even while a look is under way (it began before the change
            # and is not kept; the call would go out on the view before it, a hop more for as
            # long as the look lasts: tests/unit/test_dag_view_forgotten_mid_look.py).
            if self._looked_at == -math.inf or (
                    age >= max(self.stale_s, self.recheck_s) and not self._asked):
                return False
            if age >= self.recheck_s and not self._asked and not self._closed:
                if self.thread is None:
                    thread = threading.Thread(target=self._serve, daemon=True, name=self._name)
                    try:
                        thread.start()
                    except RuntimeError as exc:  # out of threads: the next call tries again
                        # (asked for with no thread to make the look, a view would be trusted
                        # for ever: tests/unit/test_view_thread_that_would_not_start.py)
                        log.warning("%s: no thread to read etcd: %s", self._name, exc)
                        return True
                    self.thread = thread
                self._asked = True
                self._due.set()
            return True

    def close(self) -> None:
        self._closed = True
        self._due.set()

    def _serve(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            if self._closed:
                return
            with self._lock:
                forgets = self._forgets
            try:
                self._look()
            except Exception as exc:  # etcd away: asked again a second later
                log.debug("%s: reading etcd failed: %s", self._name, exc)
                with self._lock:
                    if forgets == self._forgets:  # (a forgotten view stays so)
                        self._looked_at = self._clock()
            with self._lock:
                self._asked = False
