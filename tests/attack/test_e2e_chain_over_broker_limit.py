"""Attack (end to end, a private RabbitMQ whose max_message_size is 1 MiB, Droplet's
max_message_bytes 512 KiB below it): a chain whose first DAG returns 400 KB, followed by a DAG
of three sources.

Each value is within max_message_bytes, and the client sent a small request; but the
scheduler puts the previous result into the arguments of every source of the next DAG, and
the schedule travels in every trigger and notice of the call: messages of 1.2 MB, which the
broker refuses. The chained DagCall then went back to the queue and was scheduled again, and
again: the caller was never answered (only its own timeout ended the wait). Now the scheduler
fails the call with INVALID_REQUEST saying what to do (return a reference instead).

README "Chains of DAG calls"; "Nothing blocks forever".
Run: .venv/bin/python -m pytest -q tests/attack/test_e2e_chain_over_broker_limit.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

import droplet
from tests.attack.small_broker import small_broker_fleet
from tests.conftest import Services

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_a_chained_result_too_large_for_the_next_dags_messages_fails_the_call_clearly(
    services: Services, tmp_path: Path, unique: str
) -> None:
    u = unique
    with (small_broker_fleet(services, tmp_path, 4, "attack-chain") as settings,
          droplet.connect(settings=settings) as c):
        c.register(lambda lib, n: b"z" * n, u + "-make")
        for side in ("a", "b", "c"):
            c.register(lambda lib, blob: len(blob), f"{u}-len{side}")
        assert c.register_dag(u + "-first", [u + "-make"], []) == (True, None)
        assert c.register_dag(u + "-next", [f"{u}-len{s}" for s in "abc"], []) == (
            True, None)
        small = c.call_dag(u + "-first", {u + "-make": [1000]}, continuation=u + "-next")
        assert small.get(timeout=30) == {f"{u}-len{s}": 1000 for s in "abc"}
        big = c.call_dag(u + "-first", {u + "-make": [400_000]}, continuation=u + "-next")
        with pytest.raises(droplet.DropletError, match="max_message_bytes") as raised:
            big.get(timeout=60)
        assert raised.value.code == droplet.INVALID_REQUEST
        # The cluster still works after it.
        again = c.call_dag(u + "-first", {u + "-make": [7]}, continuation=u + "-next")
        assert again.get(timeout=30) == {f"{u}-len{s}": 7 for s in "abc"}
