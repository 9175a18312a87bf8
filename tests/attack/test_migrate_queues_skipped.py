"""Attack: `droplet migrate-queues` run while part of the fleet still consumes (a scheduler
someone forgot on another VM).

A queue with consumers is left alone, rightly, and it said so in one line of its output, but
it exited 0 as after a complete migration, so a script (`droplet migrate-queues && systemctl
start ...`) went on to start a fleet that is refused at once ("queue ... declared with other
arguments: run migrate-queues"). Now it exits 1 and says on stderr which queues are left.
Deploy guide: "stop the fleet, set queue_type everywhere, run droplet migrate-queues once".
Run: .venv/bin/python -m pytest -q tests/attack/test_migrate_queues_skipped.py
"""

from __future__ import annotations

import pytest

from droplet.broker.interface import QueueSpec, Topology
from droplet.broker_config.names import QueueNames
from droplet.cli.main import main as droplet_main
from droplet.runtime import broker_factory
from tests.conftest import Services

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def test_a_queue_left_alone_makes_migrate_queues_fail(
    services: Services, capsys: pytest.CaptureFixture[str],
) -> None:
    settings = services.settings()
    names = QueueNames.of(settings)
    # The calls queue as an older version declared it (no priorities), still consumed.
    old = QueueSpec(names.calls, durable=True,
                    arguments={"x-dead-letter-exchange": "",
                               "x-dead-letter-routing-key": names.dead})
    consumer = broker_factory(settings, "forgotten-scheduler")()
    try:
        consumer.declare(Topology(queues=[QueueSpec(names.dead, durable=True), old]))
        consumer.consume(names.calls, prefetch=1)
        consumer.poll(0.1)
        argv = ["--namespace", settings.namespace, "--broker-url", settings.broker_url,
                "--etcd", settings.etcd_endpoints[0], "migrate-queues"]
        code = droplet_main(argv)
        out, err = capsys.readouterr()
        assert f"{names.calls}: skipped" in out, out
        assert code == 1, f"exit {code} with a queue left unmigrated:\n{out}"
        assert names.calls in err and "stop the fleet" in err, err
    finally:
        consumer.delete_queue(names.calls)
        consumer.delete_queue(names.dead)
        consumer.close()
