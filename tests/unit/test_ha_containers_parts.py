"""Pieces of the containers backend of the cluster tests (tests/ha_containers.py) that need no
Docker: how a connection's node address is read from rabbitmqctl, and which host ports the
nodes may be published on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import ha_containers


@pytest.mark.parametrize(("host", "expected"), [
    ([172, 20, 0, 2], "172.20.0.2"),
    ([0, 0, 0, 0, 0, 0xFFFF, 0xAC14, 0x0002], "172.20.0.2"),  # ::ffff:172.20.0.2
    ([0, 0, 0, 0, 0, 0xFFFF, 0x0A00, 0xFF07], "10.0.255.7"),
    ("172.20.0.3", "172.20.0.3"),
])
def test_a_connections_node_address_is_read_as_the_node_containers_ipv4(
        host: object, expected: str) -> None:
    assert ha_containers._ipv4(host) == expected


def test_the_hosts_rabbitmq_ports_are_never_published(monkeypatch: pytest.MonkeyPatch) -> None:
    offered = iter([5672, 25672, 20001])
    monkeypatch.setattr(ha_containers.random.Random, "randrange", lambda self, a, b: next(offered))
    assert ha_containers._host_port() == 20001


def test_a_host_port_is_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {ha_containers._host_port() for _ in range(50)}
    assert all(10000 <= port < low and port not in (5672, 25672) for port in ports)
