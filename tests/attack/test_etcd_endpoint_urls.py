"""Attack: etcd endpoints written as etcd prints them and etcdctl takes them
(`http://127.0.0.1:2379`, `https://...`), in a list.

The store split them at their last colon and gave gRPC "http://127.0.0.1" as a host name:
nothing resolved, each request was retried for store_retry_s (15 s) as if etcd were away and
failed with "errors resolving http://127.0.0.1:2379: Misformatted domain name"; the
loopback check took such an endpoint for another machine, and `droplet up` could not start
its etcd there. Now http:// endpoints are read as host:port, an https:// one without
etcd_ca_file is refused saying to set it, and another scheme is refused by name.
Run: .venv/bin/python -m pytest -q tests/attack/test_etcd_endpoint_urls.py
"""

from __future__ import annotations

import pytest

from droplet.errors import ConfigurationError
from droplet.settings import Settings
from tests.conftest import Services

pytestmark = pytest.mark.timeout(30)


def test_etcd_urls_are_read_as_host_and_port() -> None:
    s = Settings.from_env({"DROPLET_ETCD": "http://127.0.0.1:2379, http://10.0.0.2:2379/"})
    assert s.etcd_endpoints == ("127.0.0.1:2379", "10.0.0.2:2379")
    assert Settings(etcd_endpoints=("HTTP://localhost:2379",)).etcd_endpoints == (
        "localhost:2379",)
    assert s.with_(namespace="x").etcd_endpoints == s.etcd_endpoints
    # A loopback endpoint written as a URL is loopback: no fleet secret demanded for it.
    assert Settings(etcd_endpoints=("http://127.0.0.1:2379",)).unsigned_exposure() == []


def test_https_needs_the_ca_setting_and_other_schemes_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="etcd_ca_file"):
        Settings(etcd_endpoints=("https://10.0.0.1:2379",))
    tls = Settings(etcd_endpoints=("https://10.0.0.1:2379",), etcd_ca_file="/ca.pem")
    assert tls.etcd_endpoints == ("10.0.0.1:2379",)
    with pytest.raises(ConfigurationError, match="is not host:port"):
        Settings(etcd_endpoints=("unix://var/run/etcd.sock",))


@pytest.mark.e2e
def test_a_process_reaches_etcd_through_a_url_endpoint(services: Services) -> None:
    from droplet.store.etcd import EtcdKV

    endpoint = services.settings().etcd_endpoints[0]
    kv = EtcdKV(Settings(etcd_endpoints=(f"http://{endpoint}",), store_retry_s=3))
    try:
        kv.put("/attack/url-endpoint", b"1")
        assert kv.get("/attack/url-endpoint") == b"1"
        kv.delete("/attack/url-endpoint")
    finally:
        kv.close()
