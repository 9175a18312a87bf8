"""Cancelling a call: the CANCELLED outcome, written once, decides.

A cancel is one etcd transaction that stores CANCELLED as the call's outcome under
`results/<call id>` (write-once, like every outcome) together with a `cancels/<call id>` record.
Whoever writes the outcome first wins: when the call finished first, the cancel changes nothing
and says so; when the cancel wins, every later answer of the call (a worker finishing anyway,
a redelivery, a re-send) is the stored CANCELLED. So a cancel racing a finish has one outcome.

Every worker watches `cancels/` (worker/cancel.py): a call not started yet is skipped, a
running one is interrupted. Both are kept `settings.cancel_keep_s` (past `max_delay_s` and
`result_ttl_s`), so a call queued or delayed that long after its cancel still does not run.
"""

from __future__ import annotations

from droplet.client.checks import checked_name
from droplet.proto import pb
from droplet.proto.replies import error_value
from droplet.store.commits import Commit, Committer, Outcome, Status
from droplet.store.keys import StoreKeys

CANCELLED_MESSAGE = "the call was cancelled"


def is_cancelled(value: pb.Value | None) -> bool:
    if value is None or value.type != pb.ERROR:
        return False
    return pb.ErrorInfo.FromString(value.body).code == pb.CANCELLED


def cancel_call(committer: Committer, keys: StoreKeys, call_id: str, keep_s: float) -> bool:
    """Cancels a call unless it has an outcome already. True when its outcome is CANCELLED
    (by this cancel or an earlier one); False when it finished first (its outcome stands).

    An id nobody used is cancelled all the same (nothing tells it from a call still queued):
    a call that uses it later does not run. A call that finished longer than
    `result_window_s` ago has no outcome left to win against: its cancel reports True and
    has no effect."""
    call_id = checked_name("call id", call_id)  # it becomes an etcd key
    outcome = Outcome(call_id, error_value(pb.CANCELLED, CANCELLED_MESSAGE), ttl_s=keep_s)
    done = committer.apply(Commit(outcome=outcome, records={keys.cancel(call_id): b"1"},
                                  records_ttl_s=keep_s))
    if done.status is Status.DONE:
        return True
    return is_cancelled(done.existing)
