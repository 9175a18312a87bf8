"""Publishes still unconfirmed when the confirmed channel is reopened (the broker closed it:
a refused declare, a passive declare of a missing queue) will never be confirmed: the broker
forgets a closed channel's confirms. `restart` only set the numbering back to 1 and kept
their callbacks: the new channel's publish 1 overwrote the old publish 1's callback (its
delivery never settled), and the new channel's later (multiple) acks ran the old callbacks
as True, vouching for messages whose fate nobody knows. They are now failed (False: the
inbound delivery goes back, as for a nack), the new numbering starts clean."""

from __future__ import annotations

import pytest

from droplet.broker.confirms import PublisherConfirms

pytestmark = [pytest.mark.timeout(10)]


def test_channel_reopened_with_confirms_owed() -> None:
    scheduled: list = []
    confirms = PublisherConfirms(scheduled.append)
    fates: dict[str, list[bool]] = {}

    def callback(name: str):  # type: ignore[no-untyped-def]
        return lambda ok: fates.setdefault(name, []).append(ok)

    for name in ("old1", "old2", "old3"):
        confirms.expect(callback(name))
    confirms.restart()  # the channel was closed and opened again
    assert confirms.expect(callback("new1")) == 1
    assert confirms.expect(callback("new2")) == 2
    confirms.confirmed(2, multiple=True, ok=True)  # the new channel's ack of 1 and 2
    while scheduled:
        scheduled.pop(0)()
    assert fates == {"old1": [False], "old2": [False], "old3": [False],
                     "new1": [True], "new2": [True]}
