"""An etcd that never answered and cannot be reached: the error says where it was looked for
and which setting names it (it was "etcd get prefix failed: UNAVAILABLE: failed to connect
to ...", after store_retry_s, with nothing to act on). No services: a closed port."""

from __future__ import annotations

import socket

import pytest

from droplet.errors import StoreError
from droplet.runtime import open_kv
from droplet.settings import Settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", ["lean", "grpc"])
def test_an_etcd_never_reached_is_named_with_the_setting(transport: str) -> None:
    endpoint = f"127.0.0.1:{_closed_port()}"
    kv = open_kv(Settings(etcd_endpoints=(endpoint,), store_retry_s=0.3,
                          etcd_transport=transport))
    try:
        with pytest.raises(StoreError, match=rf"is etcd running at {endpoint}\? check "
                           r"etcd_endpoints \(DROPLET_ETCD\)"):
            kv.get_prefix("/t-unreachable/")
    finally:
        kv.close()
