"""Attack (broker access only, no secret): make a client's future return another call's
result.

Replies are signed as envelopes, but nothing binds a response to the call it answers where
the client looks: the client routes a reply by the AMQP correlation_id first, a property
nobody signs, and only then by the signed response's call_id (client/pump.py:176), and never
checks that the two agree. Getting a signed response to re-address is easy: re-publish a
captured (signed) call with reply_to set to one's own reply address; the scheduler adopts any
reply address (scheduler/service.py:145, calls.py:33-34) and the worker answers it there
with the stored outcome.

README "A future gets its own call's result"; "Trust model": without the secret one can
"disturb the fleet (fill queues, delete keys, fail calls)".
"""

from __future__ import annotations

from typing import Any

from droplet.client.client import DropletClient
from droplet.proto import envelope
from tests.unit.inprocess import SETTINGS, Fleet


def ident(lib: Any, x: Any) -> Any:
    return x


def test_a_future_never_gets_another_calls_result() -> None:
    fleet = Fleet(settings=SETTINGS.with_(signing_key="the-fleet-secret"))
    fleet.start_worker("w1")
    fleet.start_scheduler()
    fleet.register("ident", ident)
    victim = DropletClient(fleet.settings, fleet.kv, fleet.broker.connect)
    attacker = fleet.broker.connect("attacker")
    attacker.consume_replies()
    own_address = f"stub.reply.{attacker.id}"

    # The victim transfers money, say; the attacker copies the signed call off the queue.
    paid = victim.call("ident", "pay 1000 to mallory")
    victim.batcher.flush()
    captured = fleet.broker.queues[fleet.names.work].ready[0].body
    fleet.run_until_quiet()
    assert paid.get(timeout=2) == "pay 1000 to mallory"

    # Replayed with the attacker's reply address, it earns a signed response.
    attacker.publish(fleet.names.calls, captured, reply_to=own_address)
    fleet.run_until_quiet()
    signed = next(d for d in attacker.poll(0.1)
                  if envelope.decode(d.body, fleet.signer)[0].WhichOneof("kind") == "response")

    # The victim asks something else; the attacker answers first, by correlation id (it may
    # also take the real call off the queue, as anyone on the broker can).
    balance = victim.call("ident", "balance of alice")
    victim.batcher.flush()
    attacker.publish(f"stub.reply.{victim.pump._conn.id}", signed.body,  # type: ignore[union-attr]
                     correlation_id=balance.call_id)
    fleet.run_until_quiet()  # the real answer comes too
    got = balance.get(timeout=2)
    victim.close()
    assert got == "balance of alice", f"the future got another call's result: {got!r}"
