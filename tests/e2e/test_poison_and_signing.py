"""Bad input and untrusted publishers: refused clearly, dead-lettered, never hurting the fleet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

import droplet
from droplet.broker_config.names import QueueNames
from droplet.proto import envelope, pb
from droplet.runtime import broker_factory
from droplet.signing import Signer
from droplet.store import serializer
from tests.conftest import Cluster, cluster_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

SECRET = "fleet-secret-for-tests"


signed_cluster = cluster_fixture(workers=2, scope="function", signing_key=SECRET,
                                 status_interval_s=0.5)


def _dead_letters(settings: Any) -> list[dict[str, Any]]:
    env = {**os.environ, "DROPLET_SIGNING_KEY": settings.signing_key or ""}
    out = subprocess.run(
        [sys.executable, "-m", "droplet.cli.main", "--broker-url", settings.broker_url,
         "--etcd", settings.etcd_endpoints[0], "--namespace", settings.namespace,
         "dead-letters", "--json"],
        capture_output=True, text=True, timeout=30, check=True, env=env,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _wait_for(condition: Any, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def test_garbage_in_every_queue_is_dead_lettered_and_the_fleet_keeps_serving(
    signed_cluster: Cluster, unique: str
) -> None:
    settings = signed_cluster.settings
    names = QueueNames(settings.namespace)
    worker_queue = names.worker(signed_cluster.worker_ids()[0])
    targets = [names.calls, names.admin, names.work, worker_queue]
    signer = Signer(SECRET)
    garbage = [
        b"",
        b"\x00\xff not a droplet frame",
        signer.seal(b"\x0a\x03not protobuf"),
        signer.seal(pb.Envelope().SerializeToString()),  # signed but empty
        envelope.encode([pb.Message(pin=pb.PinRequest())], signer),  # wrong kind for calls
    ]
    conn = broker_factory(settings, "garbage")()
    try:
        for queue in targets:
            for body in garbage:
                conn.publish(queue, body)
        conn.poll(0.5)
    finally:
        conn.close()
    with droplet.connect(settings=settings) as c:
        incr = c.register(lambda lib, x: x + 1, unique)
        assert [incr(i).get(timeout=10) for i in range(20)] == list(range(1, 21))
    # A pin request is a valid message on a worker's queues (it is answered, not dead).
    expected = len(targets) * len(garbage) - 2
    _wait_for(lambda: len(_dead_letters(settings)) >= expected)
    dead = _dead_letters(settings)
    assert {d["from_queue"] for d in dead} == set(targets)
    print(f"garbage: {len(targets) * len(garbage)} messages published, {len(dead)} "
          "dead-lettered, 20 of 20 calls served meanwhile")


def test_an_unsigned_client_is_refused_with_unauthorized(
    signed_cluster: Cluster, unique: str
) -> None:
    settings = signed_cluster.settings
    with droplet.connect(settings=settings) as trusted:
        trusted.register(lambda lib, x: x * 2, unique)
        assert trusted.call(unique, 21).get(timeout=10) == 42
    untrusted = settings.with_(signing_key=None)
    with droplet.connect(settings=untrusted) as c:
        with pytest.raises(droplet.UnauthorizedError):
            c.register(lambda lib: "pwned", unique + "-forged")
        with pytest.raises(droplet.UnauthorizedError):
            c.call(unique, 1).get(timeout=10)
        assert unique + "-forged" not in c.list()
    wrong = settings.with_(signing_key="not-the-fleet-secret")
    with droplet.connect(settings=wrong) as c, pytest.raises(droplet.UnauthorizedError):
        c.call(unique, 1).get(timeout=10)
    _wait_for(lambda: len(_dead_letters(settings)) >= 3)


def test_a_function_body_forged_into_etcd_is_never_unpickled(
    signed_cluster: Cluster, unique: str, tmp_path: Any
) -> None:
    settings = signed_cluster.settings
    marker = tmp_path / "pwned"

    def payload(lib: Any) -> str:
        open(str(marker), "w").close()
        return "ran"

    forged = pb.Function(name=unique, body=serializer.dump(payload).body)
    with droplet.connect(settings=settings) as c:
        # Someone with etcd access but without the fleet secret writes a function directly.
        c.kv.put(c.metadata.keys.function(unique), Signer(None).seal(forged.SerializeToString()))
        with pytest.raises(droplet.UnauthorizedError):
            c.call(unique).get(timeout=10)
    assert not marker.exists(), "the forged body was never unpickled"
