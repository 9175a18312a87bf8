"""Broker connections: the interface, RabbitMQ (amqp.py, or pika's rabbitmq.py) and an in-memory
stub (stub.py)."""

from droplet.broker.interface import (
    BrokerConnection,
    ConnectionFactory,
    Delivery,
    QueueSpec,
    Topology,
)

__all__ = ["BrokerConnection", "ConnectionFactory", "Delivery", "QueueSpec", "Topology"]
