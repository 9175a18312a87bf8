"""`client_id` sessions: the floor a session's calls carry (client/sessions.py). A session
taken up by a client object that has not used it yet starts at the store's revision, so a
second client object (another process, a client made again after a crash) reads nothing older
than what was written before its first call. End to end, with a lagging worker:
tests/attack/test_blackbox_session_across_clients.py."""

from __future__ import annotations

from droplet.client.sessions import SessionFloors


class _Store:
    def __init__(self, revision: int) -> None:
        self.revision, self.reads = revision, 0

    def read(self) -> int:
        self.reads += 1
        return self.revision


def test_a_session_new_to_this_client_starts_at_the_stores_revision_read_once() -> None:
    store = _Store(40)
    floors = SessionFloors(store.read)
    assert floors.floor("s") == 40
    store.revision = 90
    assert floors.floor("s") == 40 and store.reads == 1, "read once per session"
    assert floors.floor("other") == 90 and store.reads == 2


def test_what_a_session_saw_raises_its_floor_and_never_lowers_it() -> None:
    store = _Store(10)
    floors = SessionFloors(store.read)
    floors.saw("s", 25)
    assert floors.floor("s") == 25 and store.reads == 0, "a floor already known: no read"
    floors.saw("s", 12)
    assert floors.floor("s") == 25
    assert floors.floor("t") == 10
    floors.saw("t", 30)
    assert floors.floor("t") == 30
