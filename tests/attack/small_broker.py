"""A fleet on a private RabbitMQ whose max_message_size is 1 MiB, Droplet's max_message_bytes
512 KiB below it: where the attacks on message sizes run.

At the defaults (max_message_bytes 16 MiB, RabbitMQ's 128 MiB) the same attacks would need
values of tens of MB; a small broker limit makes them cheap. Each attack gets a node of its
own (the machine's broker is shared, and its limit must not change).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from droplet.cli.cluster import LocalCluster, purge_namespace
from droplet.settings import Settings
from tests.conftest import Services
from tests.private_rabbit import PrivateRabbit

BROKER_MAX_MESSAGE_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = 512 * 1024


@contextmanager
def small_broker_fleet(services: Services, tmp_path: Path, workers: int, label: str
                       ) -> Iterator[Settings]:
    """Starts the node and a fleet of `workers` on it, ready; yields the fleet's settings and
    stops both, purging the namespace, at the end."""
    rabbit = PrivateRabbit(tmp_path / "rabbit",
                           f"max_message_size = {BROKER_MAX_MESSAGE_BYTES}\n",
                           label=label).start()
    settings = services.settings(max_message_bytes=MAX_MESSAGE_BYTES).with_(
        broker_url=rabbit.url)
    cluster = LocalCluster(settings, tmp_path)
    try:
        cluster.start(workers=workers)
        cluster.wait_ready(workers, timeout_s=60)
        yield settings
    finally:
        cluster.stop()
        purge_namespace(settings)
        rabbit.stop()
