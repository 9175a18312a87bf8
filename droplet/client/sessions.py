"""The floors of `client_id` sessions: the newest store revision a session's calls have seen or
written, carried by its next calls (`min_revision`), so that none of them reads anything
older, on whichever worker it runs (read-your-writes and monotonic reads).

Why a session starts at the store's current revision: the floor lives in this client object,
so another client object taking up the same client id (another process of the app, a client
made again after a crash) would start from nothing and could read back in time from a worker
whose cache lags. Starting at the revision of the session's first call here (one etcd read,
once per session and client object) covers everything written before that call. Two client
objects in one session at the same time do not share their floors through the store (that
would cost an etcd write and read per call): each sees the other's later writes once its own
calls have.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class SessionFloors:
    def __init__(self, store_revision: Callable[[], int]) -> None:
        self._store_revision = store_revision
        self._floors: dict[str, int] = {}
        self._lock = threading.Lock()

    def floor(self, client_id: str, now: int | None = None) -> int:
        """The revision a call of this session may read no older than. `now`: the store's
        revision read for this call already (a MULTI call's snapshot), used for a session
        new here instead of reading it again."""
        with self._lock:
            known = self._floors.get(client_id)
        if known is not None:
            return known
        if now is None:
            now = self._store_revision()  # (an etcd read: outside the lock)
        with self._lock:
            floor = max(self._floors.get(client_id, 0), now)
            self._floors[client_id] = floor
            return floor

    def saw(self, client_id: str, revision: int) -> None:
        """A call of the session saw (or wrote) the store at this revision."""
        with self._lock:
            self._floors[client_id] = max(self._floors.get(client_id, 0), revision)
