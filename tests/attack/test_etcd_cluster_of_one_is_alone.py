"""cli/etcd_local.py: the warning of a lone etcd member of an affected release
(etcd-io/etcd#14370: answers a write before its fsync) keys on whether the member is alone in
its cluster, not on whether it was given an initial cluster: `LocalEtcd.members(base, 1)` makes
a cluster of one member, which is as alone as a plain LocalEtcd, and the bug is the same."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from droplet.cli.etcd_local import EtcdBinary, LocalEtcd
from droplet.errors import ConfigurationError

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(("count", "warned"), [(1, True), (2, False), (3, False)])
def test_a_cluster_of_one_member_warns_as_a_lone_member_does(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, count: int, warned: bool) -> None:
    missing = EtcdBinary(str(tmp_path / "no-such-etcd"), (3, 5, 1))
    member = LocalEtcd.members(tmp_path / "m", count)[0]
    member.binary = missing
    with caplog.at_level(logging.WARNING, logger="droplet.cli.etcd_local"), \
            pytest.raises(ConfigurationError):
        member.start()  # the binary is missing: it fails after the warning
    assert any("etcd-io/etcd#14370" in r.getMessage() for r in caplog.records) is warned
