"""A closed client refuses every request, not only calls: stored values, list, get_function,
cancel and DAG admin raised nothing after close() and quietly opened a new etcd connection.
In process: the stub broker and MemoryKV, no services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from droplet.client.client import DropletClient
from droplet.errors import DropletError

from .inprocess import Fleet


def _requests(client: DropletClient) -> dict[str, Callable[[], Any]]:
    return {
        "put_object": lambda: client.put_object("k", 1),
        "get_object": lambda: client.get_object("k"),
        "put_objects": lambda: client.put_objects({"k": 1}),
        "get_objects": lambda: client.get_objects(["k"]),
        "delete_object": lambda: client.delete_object("k"),
        "list": lambda: client.list(),
        "get_function": lambda: client.get_function("f"),
        "cancel": lambda: client.cancel("c1"),
        "register_dag": lambda: client.register_dag("d", ["f"], []),
        "delete_dag": lambda: client.delete_dag("d"),
    }


def test_every_request_of_a_closed_client_says_it_is_closed() -> None:
    fleet = Fleet()
    client = DropletClient(fleet.settings, fleet.kv, fleet.broker.connect)
    client.put_object("k", 41)
    assert client.get_object("k") == 41  # open: it works
    client.close()
    for name, request in _requests(client).items():
        with pytest.raises(DropletError, match="the client is closed"):
            request()
        print(name, "refused")
    client.close()  # twice is fine
