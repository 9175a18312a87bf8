"""A function that leaves a mark in the store per execution, and the count of those marks.

Tests that kill or restart a service with calls in flight (test_restarts.py; the HA cluster
tests, test_ha_cluster.py, can use it too) must tell "every call ran" from "some ran twice":
the stored outcome cannot, since a call that ran again still answers its first outcome. A
mark per run, under a key no other run writes, can.
"""

from __future__ import annotations

from typing import Any


def register_recording(client: Any, name: str, *, name_the_run: bool = False) -> None:
    """Registers `name(i)`: a slowish function that leaves a mark per run and returns i * 3,
    or with name_the_run [i * 3, a token of the run], so that a second run's outcome would
    differ from the first's."""
    prefix = f"{name}-run"

    def record(lib: Any, i: int) -> Any:
        import time as t
        import uuid as u

        token = u.uuid4().hex[:8]
        lib.put(f"{prefix}-{i}-{token}", 1)
        t.sleep(0.02)
        return [i * 3, token] if name_the_run else i * 3

    client.register(record, name)


def count_runs(client: Any, name: str) -> dict[int, int]:
    """How many times each argument i of `name` ran (its marks in the store)."""
    items, _ = client.kv.get_prefix(client.values.keys.value(f"{name}-run-"))
    counted: dict[int, int] = {}
    for key in items:
        i = int(key.rsplit("-", 2)[-2])
        counted[i] = counted.get(i, 0) + 1
    return counted
