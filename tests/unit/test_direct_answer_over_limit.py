"""A direct response whose result is over max_message_bytes is answered with an error.

A direct response is not stored: its answer carries the result whole. Published over the
broker's max_message_size (RabbitMQ 4 and Droplet both default to 16 MiB), RabbitMQ closes the
worker's channel after the call was acked, and the caller waits until its timeout (found by an
attack on the poison count, branch attack-4). The worker answers INVALID_REQUEST instead
(prepared_answers.fitting), and its session lives.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from droplet.proto import envelope, pb
from droplet.store import serializer

from .inprocess import SETTINGS, Fleet
from .test_poison_refused_later import BROKER_MAX_MESSAGE_BYTES, broker_that_refuses_later, drive

RUNS: list[str] = []


def big(lib: Any, size: int) -> bytes:
    RUNS.append(lib.getid())
    return b"r" * size


@pytest.mark.parametrize(("size", "fits"), [(BROKER_MAX_MESSAGE_BYTES + 1, False),
                                            (BROKER_MAX_MESSAGE_BYTES // 2, True)])
def test_a_direct_answer_over_max_message_bytes_is_an_error_not_a_closed_session(
        monkeypatch: pytest.MonkeyPatch, size: int, fits: bool) -> None:
    RUNS.clear()
    broker_that_refuses_later(monkeypatch)
    fleet = Fleet(settings=replace(SETTINGS, max_message_bytes=BROKER_MAX_MESSAGE_BYTES))
    fleet.start_worker("w1")
    fleet.register("big", big)
    call = pb.FunctionCall(name="big", call_id="c-1", response_key="c-1",
                           response_address=fleet.reply_to, direct_response=True)
    serializer.dump(size, call.arguments.values.add())
    fleet.client.publish(fleet.names.work,
                         envelope.encode([pb.Message(call=call)], fleet.signer),
                         reply_to=fleet.reply_to)

    faults = drive(fleet, 10)

    assert faults == 0, f"{faults} sessions closed by the broker, the call run {len(RUNS)} times"
    assert len(RUNS) == 1
    fleet.answers()
    [response] = [r for r in fleet.replies if r.call_id == "c-1"]
    if fits:
        assert response.success and serializer.load(response.value) == b"r" * size
    else:
        assert not response.success and response.error == pb.INVALID_REQUEST
        assert "max_message_bytes" in response.message and "direct" in response.message
