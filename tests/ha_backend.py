"""What the cluster scenarios (tests/e2e/test_ha_cluster.py) need from the clusters they break,
so one set of scenarios runs against either implementation:

* `tests/ha_services.py`: local processes (private RabbitMQ nodes, etcd members, `droplet`
  processes), in `local` and `external` modes;
* `tests/ha_containers.py`: containers on a Docker network of the test's own (RabbitMQ and
  etcd images, the scheduler and workers from the worker image), in `containers` mode.

The client always runs in the test process, on the host; `address` is where it reaches a node.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from droplet.settings import Settings

# What the cluster tests measured, printed again at the end of the run (tests/conftest.py),
# so CI's log shows the figures without -s.
FIGURES: list[str] = []


def report(line: str) -> None:
    print(f"\n{line}")
    FIGURES.append(line)


def in_parallel(*actions: Callable[[], object]) -> None:
    """Runs actions on threads and waits for all; the first failure is raised."""
    errors: list[BaseException] = []

    def run(action: Callable[[], object]) -> None:
        try:
            action()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a,), daemon=True) for a in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


class Node(Protocol):
    """A RabbitMQ node or an etcd member."""

    @property
    def name(self) -> str: ...

    @property
    def address(self) -> str:
        """The client's way in: an AMQP URL, or an etcd endpoint host:port."""
        ...

    def kill(self) -> None:
        """At once, as a crashed machine stops (SIGKILL)."""

    def start(self) -> None:
        """Starts it again after kill(), and waits until it serves."""

    def restart(self) -> None:
        """A graceful stop, then start(): one step of a rolling upgrade."""


class Fleet(Protocol):
    """A scheduler and workers on the clusters."""

    @property
    def settings(self) -> Settings:
        """The client's (the fleet may reach the nodes at other addresses)."""
        ...

    @property
    def worker_count(self) -> int: ...

    def cut(self, worker: int) -> str:
        """Cuts worker `worker` off from both clusters (it keeps its state); says how."""
        ...

    def reconnect(self, worker: int) -> None: ...

    def running(self, worker: int) -> bool: ...

    def stop(self) -> None: ...


class HaBackend(Protocol):
    """Both clusters, started; `settings()` is the client's (every node, quorum queues)."""

    @property
    def kind(self) -> str:
        """For the figures: "local processes" or "containers"."""
        ...

    @property
    def rabbit_nodes(self) -> Sequence[Node]: ...

    @property
    def etcd_members(self) -> Sequence[Node]: ...

    def settings(self, **overrides: object) -> Settings: ...

    def start_fleet(self, settings: Settings, log_dir: Path, workers: int) -> Fleet:
        """A scheduler and `workers` workers with these settings (the client's), ready."""
        ...

    def rabbit_node_of(self, connection_name: str) -> Node:
        """The node holding most connections of that name (e.g. droplet-worker)."""
        ...

    def etcd_leader(self) -> Node:
        """The current leader (waits for one to be elected)."""
        ...

    def queue_types(self) -> dict[str, str]:
        """Every queue of the broker and its type (classic, quorum)."""
        ...

    def stop(self) -> None: ...


def etcd_status(endpoint: str) -> dict[str, dict[str, str]] | None:
    """etcd's maintenance status through its JSON gateway (None when it does not answer)."""
    request = urllib.request.Request(f"http://{endpoint}/v3/maintenance/status", data=b"{}",
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            data = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "leader" in data else None


def leader_among(members: Sequence[Node], timeout_s: float = 30) -> Node:
    """The member whose status names itself the leader (polled until one does)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for member in members:
            status = etcd_status(member.address)
            if status and status["header"]["member_id"] == status["leader"]:
                return member
        time.sleep(0.2)
    raise RuntimeError(f"no etcd leader within {timeout_s:g} s")
