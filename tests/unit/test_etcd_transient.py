"""store/etcd_client.transient: which etcd failures are retried through an outage. A rolling
restart of etcd's members failed a worker's put with "raft proposal dropped" (CI, containers
mode): etcd's answer for a request it did not apply during a leader election."""

from __future__ import annotations

from droplet.store.etcd_client import transient
from droplet.store.etcd_lean import RpcFailure


def test_a_proposal_dropped_in_an_election_is_retried() -> None:
    assert transient(RpcFailure("UNKNOWN", "raft proposal dropped"))
    assert transient(RpcFailure("UNKNOWN", "etcdserver: raft proposal dropped"))
    assert transient(RpcFailure("UNKNOWN", "etcdserver: no leader"))


def test_a_proposal_refused_by_a_stopping_member_is_retried() -> None:
    """The same rolling restart, later (CI, containers mode, 29 Nov): a put that reached a
    member as it stopped failed the function with "raft: stopped" (raft.ErrStopped: the
    proposal never entered the log), where another member would have taken it."""
    assert transient(RpcFailure("UNKNOWN", "raft: stopped"))


def test_unreachable_is_retried_and_a_refusal_is_not() -> None:
    assert transient(RpcFailure("UNAVAILABLE", "connection refused"))
    assert not transient(RpcFailure("UNKNOWN", "etcdserver: request is too large"))
    assert not transient(RpcFailure("PERMISSION_DENIED", "etcdserver: permission denied"))
    assert not transient(RpcFailure("INVALID_ARGUMENT", "etcdserver: duplicate key given"))
