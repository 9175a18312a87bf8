"""Attack (end to end, real RabbitMQ and etcd, a signed fleet): a client configured with the
wrong signing_key cancels a call of a good client.

Its cancel writes CANCELLED under results/<call id>, signed with its key. When the call ends,
the worker's write-once commit finds that outcome taken and reads it to answer it
(store/commits.py `_why_not` -> values.outcome), which raised SignatureError out of the
worker's session: the delivery came back, its refusal met the same outcome, and every worker
of the fleet went round reconnecting every 5 s, serving nothing, for good.

README Guarantees: "Bad input never hurts the running system", "Nothing hangs", "A cancel has
one outcome ... every answer, to every client, is the stored one"; Security, trust model:
without the secret one can "fail calls" but not more.
Run: DROPLET_TEST_SERVICES=local .venv/bin/python -m pytest -q
     tests/attack/test_blackbox_wrong_key_cancel.py
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import droplet
from tests.conftest import Services, purge_namespace, start_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


def test_a_wrong_key_cancel_fails_that_call_and_the_fleet_serves_on(
    services: Services, tmp_path: Path, unique: str
) -> None:
    settings = services.settings(signing_key="the-fleet-secret", worker_lease_ttl_s=3,
                                 status_interval_s=0.5)
    cluster = start_cluster(settings, tmp_path, workers=2)
    try:
        with droplet.connect(settings=settings) as good, droplet.connect(
                settings=settings.with_(signing_key="another-key")) as wrong:
            incr = good.register(lambda lib, x: x + 1, unique + "-incr")
            slow = good.register(lambda lib, s: time.sleep(s) or s, unique + "-slow")
            assert incr(1).get(timeout=20) == 2

            running = slow(2)
            time.sleep(0.8)
            wrong.cancel(running.call_id)  # stores an outcome no worker can verify
            with pytest.raises(droplet.DropletError):  # one outcome: that call failed
                running.get(timeout=20)

            queued = slow(2)  # cancelled before it runs
            wrong.cancel(queued.call_id)
            with pytest.raises(droplet.DropletError):
                queued.get(timeout=20)

            # ... and nothing else: the fleet still answers calls
            futures = [incr(i) for i in range(10)]
            assert [f.get(timeout=30) for f in futures] == list(range(1, 11))
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())
    unexpected = [line for log in tmp_path.glob("worker-*.log")
                  for line in log.read_text().splitlines() if "unexpected failure" in line]
    assert not unexpected, unexpected[:3]
