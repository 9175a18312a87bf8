"""Attack: someone with broker and etcd access but WITHOUT the fleet secret makes a client
run code.

Admin answers are kept in etcd under requests/<nonce> unsigned (store/metadata.py:130-142), and
a scheduler that finds one answers a (replayed, signed) admin request with it, inside an
envelope it signs with the fleet secret (scheduler/service.py:186-194). The AMQP reply_to and
correlation_id of a message are not signed. So: capture an admin request (consume it from
<ns>.scheduler.admin), plant requests/<its nonce> with a GenericResponse whose value is a
malicious pickle, and re-publish the captured body with reply_to = a victim client's reply
address and correlation_id = a call id the victim waits for. The victim gets a correctly signed
reply and unpickles its value (client/future.py:93-109).

README "Security": "someone who can write to etcd cannot make workers or clients run code";
"Trust model": without the secret one can "disturb the fleet ... but not run code on it".
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from droplet.broker.stub import StubBroker
from droplet.broker_config.topology import shared_topology
from droplet.client.client import DropletClient
from droplet.cycle import Cycle
from droplet.proto import envelope, pb
from droplet.scheduler.service import SchedulerService
from droplet.settings import Settings
from droplet.store import serializer
from droplet.store.keys import StoreKeys
from droplet.store.memory import MemoryKV

SETTINGS = Settings(namespace="launder", signing_key="the-fleet-secret", request_timeout_s=1.0,
                    result_timeout_s=3.0)
RAN: list[str] = []


def mark(text: str) -> str:
    RAN.append(text)
    return text


class Payload:
    def __reduce__(self) -> Any:
        return (mark, ("attacker code ran in the client",))


def test_a_planted_admin_answer_replayed_to_a_client_runs_code_there() -> None:
    RAN.clear()
    broker, kv = StubBroker(), MemoryKV()
    names_ns = SETTINGS.namespace
    victim = DropletClient(SETTINGS, kv, broker.connect)
    kv.put(StoreKeys(SETTINGS.etcd_prefix).worker("w1"), b"")  # a worker is alive

    # The victim registers a function (no scheduler is up yet: it times out, whatever) and
    # waits for a call.
    t = threading.Thread(target=lambda: _swallow(lambda: victim.register(len, "f")))
    t.start()
    t.join()
    future = victim.call("f", [1, 2])
    victim.batcher.flush()

    # The attacker (broker + etcd, no secret) reads both messages off their queues.
    attacker = broker.connect("attacker")
    admin = attacker.get(f"{names_ns}.scheduler.admin")
    call_msg = attacker.get(f"{names_ns}.work")
    assert admin is not None and call_msg is not None
    captured = pb.Envelope.FromString(admin.body[33:])  # signed frame: 1 + 32-byte tag
    nonce = captured.nonce
    call_id = envelope.peek(call_msg.body)[0].call.call_id
    victim_reply_to = call_msg.reply_to

    # It plants an "answer" carrying a pickle, unsigned: nothing checks it.
    forged = pb.GenericResponse(success=True, call_id=call_id, response_id=call_id)
    forged.value.CopyFrom(serializer.dump(Payload()))
    kv.put(StoreKeys(SETTINGS.etcd_prefix).request(nonce), forged.SerializeToString())

    # ... and replays the captured (validly signed, young) admin request, naming the victim.
    attacker.publish(f"{names_ns}.scheduler.admin", admin.body, reply_to=victim_reply_to,
                     correlation_id=call_id)

    # A scheduler serves the admin queue.
    scheduler = SchedulerService(SETTINGS, kv, broker.connect, "s1")
    conn = broker.connect("scheduler")
    conn.declare(shared_topology(scheduler.names))
    conn.consume(scheduler.names.admin, prefetch=1)
    cycle: Cycle = scheduler._cycle(conn)
    for delivery in conn.poll(0.1):
        cycle.run(delivery, lambda m, d, r, o: scheduler._handle_admin(m, d, r, o, None))
    conn.pump()

    _swallow(lambda: future.get(timeout=2))
    victim.close()
    assert RAN == [], "a pickle planted by someone without the fleet secret ran in a client"


def _swallow(fn: Any) -> None:
    with contextlib.suppress(Exception):
        fn()
