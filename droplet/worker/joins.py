"""Fan-in state of DAG steps, kept in etcd so that a worker can die at any moment.

A step with one upstream needs no state: its trigger carries the whole schedule and the
upstream's result, and runs at once. A step with several upstreams (or the join of several
sinks' results) waits for all of them: each trigger that arrives before the last is stored
under `joins/<schedule>/<step>/src/<source>` (then acked); the last one reads them back, runs
the step, and in the transaction that stores the step's outcome clears the partials and writes
`joins/<schedule>/<step>/done` with what the step produced. So

* a trigger counts once (a redelivered partial overwrites itself);
* a worker that dies, or restarts under the same id, loses nothing: the unacked trigger comes
  back and finds the partials where they were;
* a late duplicate of the last trigger finds `done` and only sends the step's result on again.

Every record lives under a lease of `schedule_ttl_s`, so a join that can never complete (a
branch failed and told its caller already) disappears on its own. Records carry results, that
is pickles: with a fleet secret they are signed, bound to their key, like every stored value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from droplet.proto import pb
from droplet.signing import Signer, value_context
from droplet.store.keys import StoreKeys
from droplet.store.kv import KV, Compare, ModRevisionBelow


@dataclass
class JoinState:
    parts: dict[str, pb.DagTrigger] = field(default_factory=dict)  # source -> trigger
    done: pb.DagTrigger | None = None  # what the step produced, once it ran
    read_at: int = 0  # the store revision of the read: a partial is added only if nobody
    # added one since (compared on the join's version key)


class JoinRecords:
    def __init__(self, kv: KV, keys: StoreKeys, signer: Signer) -> None:
        self._kv = kv
        self.keys = keys
        self._signer = signer

    def seal(self, key: str, trigger: pb.DagTrigger) -> bytes:
        return self._signer.seal(trigger.SerializeToString(),
                                 value_context(self.keys.relative(key)))

    def read(self, schedule_id: str, target: str) -> JoinState:
        prefix = self.keys.join(schedule_id, target)
        items, revision = self._kv.get_prefix(prefix)
        state = JoinState(read_at=revision)
        version_key = self.version_key(schedule_id, target)
        done_key = self.keys.join_done(schedule_id, target)
        parts_prefix = self.parts_prefix(schedule_id, target)
        for key, raw in items.items():
            if key == version_key:
                continue
            trigger = pb.DagTrigger()
            trigger.ParseFromString(self._signer.open(raw, value_context(self.keys.relative(key))))
            if key == done_key:
                state.done = trigger
            elif key.startswith(parts_prefix):
                state.parts[key[len(parts_prefix):]] = trigger
        return state

    def version_key(self, schedule_id: str, target: str) -> str:
        """Written with every partial, compared by the next: two workers adding partials at
        once (a pin that moved while its old worker still ran) cannot both miss the other's."""
        return self.keys.join(schedule_id, target) + "v"

    def unchanged_since(self, schedule_id: str, target: str, state: JoinState) -> Compare:
        return ModRevisionBelow(self.version_key(schedule_id, target), state.read_at + 1)

    def parts_prefix(self, schedule_id: str, target: str) -> str:
        return self.keys.join(schedule_id, target) + "src/"
