"""Attack: keys of megabytes, which etcd refuses to read or write.

etcd's refusal (RESOURCE_EXHAUSTED "received message larger than max") was a StoreError, as
if etcd were away: a call given a DropletReference to such a key went back to the work queue
after each try, for ever, from worker to worker (each then paused a second for etcd to come
back), and its caller got "no result ... within 15s". put_object raised a StoreError that
looked like an outage. A refusal for size is now a StoreRequestTooLargeError (a
ValueTooLargeError): the call fails with EXECUTION_ERROR saying so, and nothing retries it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import droplet
from tests.conftest import Cluster


def test_a_key_etcd_refuses_fails_its_call_instead_of_circling(
        client: droplet.DropletClient, module_cluster: Cluster, unique: str) -> None:
    key = "k" * (2 * 1024 * 1024)
    with pytest.raises(droplet.ValueTooLargeError, match="too large"):
        client.put_object(key, 1)
    incr = client.register(lambda lib, x: x + 1, unique)
    started = time.monotonic()
    with pytest.raises(droplet.ExecutionError, match="too large"):
        incr(droplet.DropletReference(key)).get(timeout=15)
    assert time.monotonic() - started < 5
    time.sleep(1.5)
    assert module_cluster.log_dir is not None
    logs = "".join(p.read_text() for p in Path(module_cluster.log_dir).glob("worker-*.log"))
    assert "etcd is unavailable" not in logs, "the call went back to its queue"
    assert incr(1).get(timeout=10) == 2
