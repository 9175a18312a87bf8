"""A stored call's result that fits in the store is not answered with an error.

prepared_answers.fitting replaces every answer over max_message_bytes (less 1 KiB of envelope
room) with INVALID_REQUEST, saying "a direct response is not stored". A stored call's answer
carries its result inline up to INLINE_REPLY_BYTES (1 MiB): with max_message_bytes under that
(a broker with a smaller max_message_size), a stored call's result of, say, 300 KiB is written
to the store fine, yet its caller is told the call failed with INVALID_REQUEST. Such an answer
should only announce the result (`stored`), as one over 1 MiB does: the caller reads it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from droplet.proto import envelope, pb
from droplet.store import serializer

from .inprocess import SETTINGS, Fleet
from .test_poison_refused_later import BROKER_MAX_MESSAGE_BYTES, broker_that_refuses_later, drive


def big(lib: Any, size: int) -> bytes:
    return b"r" * size


def test_a_stored_answer_over_max_message_bytes_is_announced_not_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    broker_that_refuses_later(monkeypatch)
    fleet = Fleet(settings=replace(SETTINGS, max_message_bytes=BROKER_MAX_MESSAGE_BYTES))
    fleet.start_worker("w1")
    fleet.register("big", big)
    size = BROKER_MAX_MESSAGE_BYTES + 44 * 1024  # 300 KiB: under 1 MiB inline, over the limit
    call = pb.FunctionCall(name="big", call_id="c-1", response_key="c-1",
                           response_address=fleet.reply_to)
    serializer.dump(size, call.arguments.values.add())
    fleet.client.publish(fleet.names.work,
                         envelope.encode([pb.Message(call=call)], fleet.signer),
                         reply_to=fleet.reply_to)

    faults = drive(fleet, 10)

    assert faults == 0, f"{faults} sessions closed by the broker"
    fleet.answers()
    [response] = [r for r in fleet.replies if r.call_id == "c-1"]
    assert response.success, f"stored fine, answered {pb.ErrorCode.Name(response.error)}: " \
        f"{response.message}"
