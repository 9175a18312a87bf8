"""Publisher confirms of one confirmed channel, turned into per-message callbacks.

Shared by both transports (broker/amqp.py, broker/rabbitmq.py) because this bookkeeping is
what makes a forward safe: services ack an inbound message only from the callback of what
they published for it, so the sequence numbers, the returned (unroutable) mandatory messages
and the callbacks owed must agree exactly. Confirms arrive while the transport reads frames,
where nothing may publish: they are only recorded there, and the callbacks run from the
connection's next poll (`schedule`).
"""

from __future__ import annotations

from collections.abc import Callable

from droplet.broker.interface import ConfirmCallback


class PublisherConfirms:
    """`schedule(fn)` runs fn from the connection's next poll."""

    def __init__(self, schedule: Callable[[Callable[[], None]], None]) -> None:
        self._schedule = schedule
        self.seq = 0  # the broker's delivery tag of the last publish on the channel
        self._unconfirmed: dict[int, ConfirmCallback | None] = {}
        self._returned: set[int] = set()
        self._confirmed: list[tuple[ConfirmCallback, bool]] = []

    def restart(self) -> None:
        """A new channel numbers its publishes from 1 again. What the closed one still owed
        is never confirmed (the broker forgets it): failed, as for a nack, not left to be
        overwritten or vouched for by the new channel's acks
        (tests/attack/test_channel_reopened_with_confirms_owed.py)."""
        self.seq = 0
        owed = [callback for callback in self._unconfirmed.values() if callback is not None]
        self._unconfirmed.clear()
        self._returned.clear()
        if owed:
            self._confirmed.extend((callback, False) for callback in owed)
            self._schedule(self._run)

    def expect(self, on_confirm: ConfirmCallback | None) -> int:
        """Numbers a publish about to go on the confirmed channel; on_confirm gets its fate."""
        self.seq += 1
        self._unconfirmed[self.seq] = on_confirm
        return self.seq

    def withdraw(self, seq: int) -> None:
        """A publish numbered by expect() failed before any byte of it was written (a property
        that would not encode): the broker never numbers it, so its number is free again."""
        if seq == self.seq:
            self._unconfirmed.pop(seq, None)
            self.seq -= 1

    def confirm_now(self, on_confirm: ConfirmCallback) -> None:
        """A publish that gets no confirm from the broker: on_confirm(True) from the next poll."""
        self._confirmed.append((on_confirm, True))
        self._schedule(self._run)

    def returned(self, message_id: str | None) -> None:
        """A mandatory publish came back unroutable; its message_id is its sequence number."""
        if message_id and message_id.isdigit():
            self._returned.add(int(message_id))

    def confirmed(self, tag: int, multiple: bool, ok: bool) -> None:
        """A Basic.Ack (ok) or Basic.Nack: only records; callbacks run from poll()."""
        seqs = [s for s in self._unconfirmed if s <= tag] if multiple else [tag]
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
