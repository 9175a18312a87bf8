"""Attack: a client_id session does not read its own write of an output key.

A NORMAL DAG call's answer carries the newest revision its functions read or wrote
(`context.observed_revision`), not the revision of the transaction that stored its outcome
and its output key (cycle.py:230-233 takes the commit's revision only for MULTI commits and
duplicates). So the session never learns that it wrote the output key: its next call may run
on a worker whose cache (one watch delay behind) still holds the older value, and reads it.

README "client_id sessions: calls carrying the same client id never read a value older than
one their session has already seen or written (read-your-writes and monotonic reads),
whichever workers they run on."
"""

from __future__ import annotations

from typing import Any

from droplet.proto import pb
from droplet.store import serializer
from tests.unit.inprocess import Fleet


def produce(lib: Any, value: str) -> str:
    return value


def consume(lib: Any, key: str) -> Any:
    return lib.get(key)


def test_a_session_reads_the_output_key_its_previous_call_wrote() -> None:
    fleet = Fleet()
    fleet.start_worker("w1")
    reader = fleet.start_worker("w2")
    fleet.start_scheduler()
    fleet.register("produce", produce)
    fleet.register("consume", consume)
    fleet.pin(pb.Dag(name="write", functions=["produce"]), {"produce": "w1"})
    fleet.pin(pb.Dag(name="read", functions=["consume"]), {"consume": "w2"})
    fleet.values.put("out", "old")
    warm = fleet.call_dag("read", {"consume": ["out"]})
    fleet.run_until_quiet()
    assert fleet.answers()[warm] == ["old"]  # w2 now caches "out"

    # w2's watch runs a little behind (as any watch does): events wait a moment.
    held: list[Any] = []
    cache = reader.service.cache
    for watch_id, (prefix, callback) in list(fleet.kv._watches.items()):
        if getattr(callback, "__self__", None) is cache:
            fleet.kv._watches[watch_id] = (prefix, lambda events: held.extend(events))

    first = fleet.call_dag("write", {"produce": ["new"]}, client_id="s", output_key="out")
    fleet.run_until_quiet()
    fleet.answers()
    revision = max(r.revision for r in fleet.replies if r.call_id == first)
    assert serializer.load(fleet.values.get_value("out")) == "new"  # stored at once

    second = fleet.call_dag("read", {"consume": ["out"]}, client_id="s", min_revision=revision)
    fleet.run_until_quiet()
    assert fleet.answers()[second] == ["new"], (
        f"the session read an output key older than its own write (session revision "
        f"{revision}, the write is at {fleet.kv.revision()})")
