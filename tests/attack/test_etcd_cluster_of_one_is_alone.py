"""cli/etcd_local.py: the warning of a lone etcd member of an affected release
(etcd-io/etcd#14370: answers a write before its fsync) keys on whether the member is alone in
its cluster, not on whether it was given an initial cluster: `LocalEtcd.members(base, 1)` makes
a cluster of one member, which is as alone as a plain LocalEtcd, and the bug is the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from droplet.cli.etcd_local import EtcdBinary, LocalEtcd

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(("count", "warned"), [(1, True), (2, False), (3, False)])
def test_a_cluster_of_one_member_warns_as_a_lone_member_does(
        tmp_path: Path, count: int, warned: bool) -> None:
    member = LocalEtcd.members(tmp_path / "m", count)[0]
    member.binary = EtcdBinary(str(tmp_path / "etcd"), (3, 5, 1))
    warning = member.alone_warning()
    assert (warning is not None) is warned
    assert warning is None or "etcd-io/etcd#14370" in warning
