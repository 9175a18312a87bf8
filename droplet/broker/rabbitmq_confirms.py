"""Publisher confirms of one RabbitMQ channel, turned into per-message callbacks.

Apart from the connection (broker/rabbitmq.py) because this bookkeeping is what makes a
forward safe: services ack an inbound message only from the callback of what they published
for it, so the sequence numbers, the returned (unroutable) mandatory messages and the
callbacks owed must agree exactly. pika reports confirms inside its I/O loop, where nothing
may publish: they are only recorded there, and the callbacks run from the connection's next
poll.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika

from droplet.broker.interface import ConfirmCallback


class PublisherConfirms:
    """`schedule(fn)` runs fn from the connection's next poll (pika's call_later(0, fn))."""

    def __init__(self, schedule: Callable[[Callable[[], None]], None]) -> None:
        self._schedule = schedule
        self.seq = 0  # the broker's delivery tag of the last confirmed publish on the channel
        self._unconfirmed: dict[int, ConfirmCallback | None] = {}
        self._returned: set[int] = set()
        self._confirmed: list[tuple[ConfirmCallback, bool]] = []

    def restart(self) -> None:
        """A new channel numbers its publishes from 1 again."""
        self.seq = 0

    def expect(self, on_confirm: ConfirmCallback | None) -> int:
        """Numbers a publish about to go on the confirmed channel; on_confirm gets its fate."""
        self.seq += 1
        self._unconfirmed[self.seq] = on_confirm
        return self.seq

    def confirm_now(self, on_confirm: ConfirmCallback) -> None:
        """A publish that gets no confirm from the broker: on_confirm(True) from the next poll."""
        self._confirmed.append((on_confirm, True))
        self._schedule(self._run)

    def on_return(self, _ch: Any, _method: Any, props: pika.BasicProperties, _body: bytes
                  ) -> None:
        if props.message_id and props.message_id.isdigit():
            self._returned.add(int(props.message_id))

    def on_confirm(self, frame: Any) -> None:
        """Runs inside pika's I/O loop: only records; callbacks run from poll()."""
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        tag = int(method.delivery_tag)
        seqs = [s for s in self._unconfirmed if s <= tag] if method.multiple else [tag]
        for seq in seqs:
            callback = self._unconfirmed.pop(seq, None)
            returned = seq in self._returned
            self._returned.discard(seq)
            if callback is not None:
                self._confirmed.append((callback, ok and not returned))
        if self._confirmed:
            self._schedule(self._run)

    def _run(self) -> None:
        done, self._confirmed = self._confirmed, []
        for callback, ok in done:
            callback(ok)
