"""What a scheduler knows about the fleet: a cache of etcd, kept current by watches.

Any number of schedulers can run: none holds state of its own beyond this cache, and every
write that matters goes to etcd first (see store/metadata.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from droplet.broker_config.names import QueueNames
from droplet.proto import pb
from droplet.settings import MAX_MESSAGE_BYTES


@dataclass
class SchedulerState:
    names: QueueNames
    scheduler_id: str = ""
    workers: dict[str, pb.WorkerStatus] = field(default_factory=dict)  # alive workers
    schedulers: set[str] = field(default_factory=set)  # alive schedulers
    pins: dict[str, pb.PinRecord] = field(default_factory=dict)  # worker id -> pin
    dags: dict[str, pb.DagRecord] = field(default_factory=dict)
    # Workers that reported themselves overloaded: no new placements until they recover.
    backoff: set[str] = field(default_factory=set)
    # Latest etcd revision seen by this scheduler's watches: the snapshot of a MULTI call.
    revision: int = 0
    # The store's current revision, read from etcd: the snapshot of a MULTI call run again
    # after it lost a commit race (the watches may lag behind the write it lost to).
    fresh_revision: Callable[[], int] = lambda: 0
    # Calls placed on each worker's own queue since its status was written: worker id ->
    # (that status's updated_at, count). See tagged.py.
    placed: dict[str, tuple[float, int]] = field(default_factory=dict)
    # What one message may carry (settings.max_message_bytes): a chained call's schedule, which
    # every trigger of the call carries, is checked against it (scheduler/chains.py).
    max_message_bytes: int = MAX_MESSAGE_BYTES

    def free_workers(self) -> list[str]:
        """Alive workers without a pin, which can accept one."""
        return sorted(w for w in self.workers if w not in self.pins)

    def dag_locations(self, dag_name: str) -> dict[str, str]:
        """function -> worker id for a DAG's pinned functions on alive workers."""
        return {
            pin.function_name: worker_id
            for worker_id, pin in self.pins.items()
            if pin.dag_name == dag_name and worker_id in self.workers
        }
