"""Attack on throughput: in a burst that mixes plain calls with calls that need tags or
batch, the plain ones still go straight to the shared work queue (no scheduler hop), and a
need of 0 (`with_resources({"gpu": 0})`) is a plain call."""

from __future__ import annotations

from droplet.client.tagging import checked_needs
from droplet.proto import envelope
from droplet.signing import Signer
from droplet.store.memory import MemoryKV
from tests.unit.test_call_routing import KEYS, NAMES, calls, router


def test_plain_calls_in_a_mixed_burst_go_to_the_work_queue_only() -> None:
    kv = MemoryKV()
    kv.put(KEYS.worker("w1"), b"")
    route, _sent = router(kv)
    bodies: list[tuple[str, list[str]]] = []
    inner = route._send

    def send(queue: str, body: bytes, ids: list[str], priority: int = 0,
             persistent: bool = True) -> None:
        bodies.append((queue, [m.call.call_id for m in envelope.decode(body, Signer(None))]))
        inner(queue, body, ids, priority=priority, persistent=persistent)

    route._send = send
    burst = calls(12)
    for i, call in enumerate(burst):
        if i % 3 == 1:
            call.resources.update({"gpu": 1.0})
        elif i % 3 == 2:
            call.batching = True
    zero = calls(1)[0]
    zero.call_id = "zero"
    zero.resources.update(checked_needs({"gpu": 0}))
    assert route.send([*burst, zero]) == []
    to_work = {c for queue, ids in bodies if queue == NAMES.work for c in ids}
    to_calls = {c for queue, ids in bodies if queue == NAMES.calls for c in ids}
    assert to_work == {f"c{i}" for i in range(0, 12, 3)} | {"zero"}
    assert to_calls == {f"c{i}" for i in range(12) if i % 3}
