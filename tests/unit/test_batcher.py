"""Call coalescing: alone goes at once, bursts travel together, nothing waits long."""

from __future__ import annotations

import time

from droplet.client.batcher import CallBatcher
from droplet.proto import pb


def _calls(n: int) -> list[pb.FunctionCall]:
    return [pb.FunctionCall(name="f", call_id=str(i)) for i in range(n)]


def test_a_call_made_alone_is_sent_at_once() -> None:
    sent: list[list[pb.FunctionCall]] = []
    batcher = CallBatcher(sent.append, burst_gap_s=0.01)
    try:
        for call in _calls(3):
            batcher.add(call)
            assert sent and sent[-1] == [call], "sent without waiting"
            time.sleep(0.02)
    finally:
        batcher.close()
    assert [len(b) for b in sent] == [1, 1, 1]


def test_a_burst_travels_in_batches_and_the_rest_goes_after_the_linger() -> None:
    sent: list[list[pb.FunctionCall]] = []
    batcher = CallBatcher(sent.append, linger_s=0.01, max_batch=10, burst_gap_s=1.0)
    try:
        for call in _calls(25):
            batcher.add(call)
        time.sleep(0.1)
    finally:
        batcher.close()
    assert sum(len(b) for b in sent) == 25
    assert len(sent) <= 4, "one alone, then batches of up to 10"
    assert [c.call_id for b in sent for c in b] == [str(i) for i in range(25)], "in order"


def test_flush_sends_what_is_pending() -> None:
    sent: list[list[pb.FunctionCall]] = []
    batcher = CallBatcher(sent.append, linger_s=10.0, burst_gap_s=1.0)
    try:
        for call in _calls(3):
            batcher.add(call)
        batcher.flush()
        assert sum(len(b) for b in sent) == 3
    finally:
        batcher.close()


def test_a_call_made_while_the_fleet_is_saturated_waits_for_company() -> None:
    """With as many calls in flight as the fleet runs at once, a call would wait in the queue
    anyway: a slow producer's calls (each more than burst_gap_s after the last, as on a
    crowded client) go together, not each in a message of its own."""
    sent: list[list[pb.FunctionCall]] = []
    saturated = [True]
    # A linger of a second: the three adds (15 ms apart) fit in it even on a crowded host,
    # where a 50 ms linger ran out between them when the test's thread was kept off a core.
    batcher = CallBatcher(sent.append, linger_s=1.0, burst_gap_s=0.001,
                          saturated=lambda: saturated[0])
    try:
        for call in _calls(3):
            batcher.add(call)
            time.sleep(0.005)
        assert sent == [], "held for the linger"
        deadline = time.monotonic() + 10.0
        while not sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [len(b) for b in sent] == [3]
        saturated[0] = False
        time.sleep(0.01)
        batcher.add(pb.FunctionCall(name="f", call_id="alone"))
        assert [len(b) for b in sent] == [3, 1], "not saturated: at once again"
    finally:
        batcher.close()
