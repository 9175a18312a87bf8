"""Wiring of real services: the one place that picks RabbitMQ and etcd for a process.

Schedulers, workers and clients receive a KV and a connection factory; this module builds
them from Settings (the CLI and `droplet.connect()` call it), so nothing below imports pika or
etcd3 directly.
"""

from __future__ import annotations

from collections.abc import Callable

from droplet.broker.interface import BrokerConnection, ConnectionFactory
from droplet.settings import Settings
from droplet.store.kv import KV


def open_kv(settings: Settings) -> KV:
    from droplet.store.etcd import EtcdKV

    return EtcdKV(settings)


def broker_factory(settings: Settings, name: str, confirms: bool = True) -> ConnectionFactory:
    """Connections to the broker; with several nodes in broker_url, a reconnect tries the
    node after the last one that worked first (broker/nodes.py). Under quorum queues every
    connection uses publisher confirms, whatever `confirms` asks."""
    from droplet.broker.nodes import NodeOrder

    transport = broker_transport(settings)
    nodes = NodeOrder(settings.broker_urls)
    confirms = confirms or settings.quorum_queues

    def connect() -> BrokerConnection:
        return transport(settings, name, confirms, nodes)

    return connect


def broker_transport(settings: Settings) -> Callable[..., BrokerConnection]:
    """The one place that picks the AMQP client (settings.broker_transport): Droplet's lean
    one (broker/amqp.py) by default, pika's (broker/rabbitmq.py) to fall back to."""
    if settings.broker_transport == "pika":
        from droplet.broker.rabbitmq import RabbitConnection

        return RabbitConnection
    from droplet.broker.amqp import AmqpConnection

    return AmqpConnection
