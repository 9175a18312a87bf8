"""A step whose trigger the broker refuses after the publish is still poison.

RabbitMQ refuses a message over its max_message_size by closing the channel after the
publish went out; the worker reads the close at its next poll (refusing_broker.py). A publish
the cycle itself makes (a step's trigger carrying its result) is confirmed after `cycle.run`
has returned. Clearing the poison count then (an attack on 0fd16cc showed it) let a step that
ends its worker's session on every run loop for ever: the count goes only once the delivery's
gate is done (PoisonCounter.ran). Droplet refuses such a message before publishing it
(test_message_size_limits.py), unless its max_message_bytes is set above the broker's limit,
as here: then the count is what ends the step.
"""

from __future__ import annotations

from typing import Any

import pytest

from .refusing_broker import (
    BROKER_MAX_MESSAGE_BYTES,
    drive,
    fleet_with_limit,
    pinned_pair,
    refusing_broker,
)

RUNS: list[str] = []


def big(lib: Any, size: int) -> bytes:
    RUNS.append(lib.getid())
    return b"r" * size


def after(lib: Any, blob: bytes) -> int:
    return len(blob)


def test_a_step_whose_trigger_the_broker_refuses_later_is_still_poison(
        monkeypatch: pytest.MonkeyPatch) -> None:
    RUNS.clear()
    refusing_broker(monkeypatch)
    fleet = fleet_with_limit(2 * BROKER_MAX_MESSAGE_BYTES)  # above the broker's, by mistake
    pinned_pair(fleet, ("big", big), ("after", after))
    call_id = fleet.call_dag("d", {"big": [BROKER_MAX_MESSAGE_BYTES + 1]})
    limit = fleet.settings.dead_letter_max_redeliveries

    faults = drive(fleet, limit + 4)

    assert len(RUNS) <= limit + 1, (
        f"the step ran {len(RUNS)} times, each ending its worker's session ({faults} "
        f"session faults), past dead_letter_max_redeliveries={limit}: the count was cleared "
        "by PoisonCounter.done before the broker's refusal was read")
    assert fleet.answers().get(call_id), "the DAG call was never answered"
