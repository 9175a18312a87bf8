"""The client library: `droplet.connect()` returns a DropletClient."""

from __future__ import annotations

from typing import Any

from droplet.client.client import DropletClient
from droplet.client.function import DropletFunction
from droplet.client.future import DropletFuture
from droplet.settings import Settings


def connect(
    broker_url: str | None = None,
    etcd: str | None = None,
    *,
    namespace: str | None = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> DropletClient:
    """Connects to a Droplet cluster.

    Unset arguments come from the environment (DROPLET_BROKER_URL, DROPLET_ETCD, DROPLET_*,
    or a DROPLET_CONFIG file), then from the defaults: RabbitMQ on 127.0.0.1:5672 as guest,
    etcd on 127.0.0.1:2379, and the fleet secret `droplet up` made on this machine.
    """
    from droplet.errors import InvalidArgumentError
    from droplet.runtime import broker_factory, open_kv

    for label, given in (("broker_url", broker_url), ("etcd", etcd)):
        if given is not None and not isinstance(given, str):
            hint = " (pass settings=... for a Settings)" if isinstance(given, Settings) else ""
            raise InvalidArgumentError(f"{label} must be a string, not "
                                       f"{type(given).__name__}{hint}")
    if settings is None:
        settings = Settings.from_env(
            broker_url=broker_url, etcd_endpoints=etcd, namespace=namespace, **overrides
        ).with_local_fleet_secret()
    else:
        settings = settings.with_secret_file()
    kv = open_kv(settings)
    try:
        # Confirms, so that a DAG trigger sent straight to a worker whose queue is gone comes
        # back and goes to the schedulers instead (client/dagroutes.py).
        connect_broker = broker_factory(settings, "droplet-client", confirms=settings.dag_direct)
        return DropletClient(settings, kv, connect_broker)
    except BaseException:
        kv.close()
        raise


__all__ = ["DropletClient", "DropletFunction", "DropletFuture", "connect"]
