"""Which etcd releases answer a write before it is on disk when they run alone
(etcd-io/etcd#14370), and that a lone member of one says so when it starts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from droplet.cli.etcd_local import EtcdBinary, LocalEtcd, find_etcd
from droplet.errors import ConfigurationError


@pytest.mark.parametrize(("version", "fsyncs"), [
    ((3, 5, 1), False), ((3, 5, 4), False), ((3, 5, 5), True), ((3, 5, 15), True),
    ((3, 4, 20), False), ((3, 4, 21), True), ((3, 4, 23), True),
    ((3, 3, 27), False), ((3, 6, 0), True), ((4, 0, 0), True), ((), False),
])
def test_which_releases_have_a_write_on_disk_before_they_answer(
        version: tuple[int, ...], fsyncs: bool) -> None:
    binary = EtcdBinary("/opt/etcd", version)
    assert binary.fsyncs_alone is fsyncs
    warning = binary.alone_warning()
    assert (warning is None) is fsyncs
    if warning is not None:
        assert "etcd-io/etcd#14370" in warning and "/opt/etcd" in warning


def test_a_lone_member_of_an_affected_release_warns_and_a_cluster_member_does_not(
        tmp_path: Path) -> None:
    affected = EtcdBinary(str(tmp_path / "etcd"), (3, 5, 1))
    for cluster, warned in (("", True), ("a=http://127.0.0.1:1,b=http://127.0.0.1:2", False)):
        etcd = LocalEtcd(tmp_path / "data", binary=affected)
        etcd.initial_cluster = cluster
        assert (etcd.alone_warning() is not None) is warned


def test_the_warning_comes_once_etcd_runs_and_never_before_an_error_at_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A start that fails says its error alone (the first line is what went wrong); a lone
    member that runs says what it is."""
    missing = EtcdBinary(str(tmp_path / "no-such-etcd"), (3, 5, 1))
    with caplog.at_level(logging.WARNING, logger="droplet.cli.etcd_local"), \
            pytest.raises(ConfigurationError):
        LocalEtcd(tmp_path / "data", binary=missing).start()
    assert not caplog.records
    found = find_etcd()
    if found is None:
        pytest.skip("no etcd binary here")
    etcd = LocalEtcd(tmp_path / "running", binary=found)
    with caplog.at_level(logging.WARNING, logger="droplet.cli.etcd_local"):
        etcd.start()
    try:
        said = any("etcd-io/etcd#14370" in r.getMessage() for r in caplog.records)
        assert said is (not found.fsyncs_alone)
    finally:
        etcd.stop()
