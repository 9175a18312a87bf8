"""Attack (someone who can write to etcd, no secret): one undecodable key under claims/.

Reaper.settle_claims parses every claim with pb.Claim.FromString (scheduler/reaper.py:78-83);
garbage raises protobuf's DecodeError, which is not a DropletError, so Reconciler.run lets it
through (scheduler/reconcile.py:67) and the admin loop's session dies
(scheduler/service.py:176 -> run_with_reconnect). Every reconciliation from then on stops at
that key: no claim of a dead worker is settled again (their long calls never complete),
orphaned chunks are never swept, and the admin connection is torn down every 2 s (admin
requests in flight with it). Claims are not signed, so any etcd writer can do this.

README "Trust model": without the secret one can "disturb the fleet (fill queues, delete keys,
fail calls)"; stopping the healing of every other call is more than that, and "Bad input
never hurts the running system".
"""

from __future__ import annotations

from droplet.proto import pb
from tests.unit.inprocess import Fleet


def test_one_garbage_claim_does_not_stop_the_settling_of_the_others() -> None:
    fleet = Fleet()
    scheduler = fleet.start_scheduler()
    keys = scheduler.metadata.keys
    orphan = pb.Claim(worker_id="gone", incarnation="x", queue=fleet.names.work,
                      body=b"\x01whatever")  # a long call held by a worker that died
    fleet.kv.put(keys.claim("gone.1"), orphan.SerializeToString())
    fleet.kv.put(keys.claim("zzz-planted"), b"\xff\xff not a claim")

    try:
        scheduler.reconciler.run(pins=None)  # type: ignore[arg-type]
    except Exception as exc:
        raise AssertionError(f"reconciliation died on a planted key: {exc!r}") from None
    left, _ = fleet.kv.get_prefix(keys.claim("gone"))
    assert not left, "the dead worker's claim was settled"
