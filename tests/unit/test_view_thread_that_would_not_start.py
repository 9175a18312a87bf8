"""Attack on client/viewkeeper.py (df154ac): the keeper's thread cannot be started (the
process is out of threads for a moment: `RuntimeError: can't start new thread`) when a call
first asks it for a look.

Found: usable() marked the look as asked for before starting the thread, so the error left it
asked for ever with no thread to make it: the call failed, and from then on every call went
on with that view however old, never read again, by the thread or by the call itself (the view
of an idle client is read by its call only when no look is under way). Now a look is asked for
only once the thread runs: the call goes on with its view, the next one tries again, and a view
past stale_s is read by the call.
Run: .venv/bin/python -m pytest -q tests/unit/test_view_thread_that_would_not_start.py
"""

from __future__ import annotations

import threading
import time

import pytest

from droplet.client.viewkeeper import ViewKeeper


def test_a_thread_that_would_not_start_leaves_no_look_asked_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    looks: list[float] = []
    keeper: ViewKeeper

    def look() -> None:
        looks.append(now[0])
        keeper.looked()

    keeper = ViewKeeper(look, "test-view", clock=lambda: now[0])
    start = threading.Thread.start

    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    try:
        keeper.looked()
        now[0] += 1.5
        monkeypatch.setattr(threading.Thread, "start", refused)
        assert keeper.usable()  # no look could be asked for: the call goes on with the view
        assert not keeper.busy(), "a look was left asked for with no thread to make it"
        now[0] += 5
        assert not keeper.usable(), "a view 6.5 s old was trusted for ever"
        keeper.looked()  # the call read it itself
        monkeypatch.setattr(threading.Thread, "start", start)
        now[0] += 1.5
        assert keeper.usable()  # asks the thread, which starts now
        deadline = time.monotonic() + 5
        while not looks:
            assert time.monotonic() < deadline, "the thread never looked"
            time.sleep(0.01)
    finally:
        monkeypatch.setattr(threading.Thread, "start", start)
        keeper.close()
