"""Choosing and starting the embedded etcd: one binary chosen the same way every time, data
kept per etcd series, and a start that fails says why in the error itself.

The etcd binaries here are fakes (shell scripts): they answer `--version` like etcd and, when
run, fail the way a real etcd does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from droplet.cli import etcd_local
from droplet.cli.etcd_local import EtcdBinary, LocalEtcd, embedded_data_dir, find_etcd
from droplet.errors import ConfigurationError

DOWNGRADE = ('{"level":"fatal","msg":"failed to start etcd",'
             '"error":"cluster cannot be downgraded (current version: 3.4.23 is lower than '
             'determined cluster version: 3.5)."}')


def fake_etcd(directory: Path, version: str, says: str = "", exit_code: int = 1) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "etcd"
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "etcd Version: {version}"; exit 0; fi\n'
        f"echo 'starting etcd {version}'\n"
        f"echo '{says}' >&2\n"
        f"exit {exit_code}\n"
    )
    path.chmod(0o755)
    return str(path)


def test_a_failed_start_says_why_and_what_to_do(tmp_path: Path) -> None:
    binary = fake_etcd(tmp_path / "old", "3.4.23", DOWNGRADE)
    etcd = LocalEtcd(tmp_path / "data", binary=EtcdBinary(binary, (3, 4, 23)))
    with pytest.raises(ConfigurationError) as failed:
        etcd.start(timeout_s=10)
    message = str(failed.value)
    assert "cluster cannot be downgraded" in message  # etcd's own words, from its log
    assert "written by a newer etcd" in message and "DROPLET_ETCD_BINARY" in message
    assert str(tmp_path / "data") in message and binary in message


def test_only_this_starts_log_is_quoted(tmp_path: Path) -> None:
    log = tmp_path / "etcd.log"
    log.write_text("an old run said: address already in use\n")
    binary = fake_etcd(tmp_path / "bin", "3.5.1", "something unexpected")
    etcd = LocalEtcd(tmp_path / "data", log_path=log, binary=EtcdBinary(binary, (3, 5, 1)))
    with pytest.raises(ConfigurationError) as failed:
        etcd.start(timeout_s=10)
    assert "something unexpected" in str(failed.value)
    assert "address already in use" not in str(failed.value)


def test_the_newest_etcd_is_chosen_whatever_comes_first(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    old = fake_etcd(tmp_path / "debian", "3.4.23")
    new = fake_etcd(tmp_path / "wheel", "3.5.1")
    monkeypatch.delenv("DROPLET_ETCD_BINARY", raising=False)
    for order in ([old, new], [new, old]):
        monkeypatch.setattr(etcd_local, "_candidates", lambda order=order: order)
        assert find_etcd() == EtcdBinary(new, (3, 5, 1))
    monkeypatch.setenv("DROPLET_ETCD_BINARY", old)
    assert find_etcd() == EtcdBinary(old, (3, 4, 23))


def test_embedded_data_is_kept_per_etcd_series(tmp_path: Path) -> None:
    dirs = {embedded_data_dir(tmp_path, "127.0.0.1:2379", EtcdBinary("e", version))
            for version in [(3, 4, 23), (3, 5, 1), (3, 5, 9)]}
    assert dirs == {tmp_path / "etcd-127.0.0.1-2379-v3.4", tmp_path / "etcd-127.0.0.1-2379-v3.5"}


def test_droplet_up_says_why_its_etcd_did_not_start(tmp_path: Path) -> None:
    """What `make demo` shows: the error of `droplet up` itself names etcd's reason."""
    binary = fake_etcd(tmp_path / "old", "3.4.23", DOWNGRADE)
    port = etcd_local.free_port()
    env = {**os.environ, "DROPLET_ETCD_BINARY": binary, "DROPLET_ETCD": f"127.0.0.1:{port}"}
    done = subprocess.run(
        [sys.executable, "-m", "droplet.cli.main", "up", "--workers", "1",
         "--state-dir", str(tmp_path / "state")],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cluster cannot be downgraded" in done.stderr
    assert f"etcd-127.0.0.1-{port}-v3.4" in done.stderr
