"""Broker configuration: queue names (names.py) and the topology to declare (topology.py)."""

from droplet.broker_config.names import QueueNames, check_name
from droplet.broker_config.topology import shared_topology, worker_topology

__all__ = ["QueueNames", "check_name", "shared_topology", "worker_topology"]
