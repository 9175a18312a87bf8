"""What the dashboard's and the operator commands' attack tests share: a dashboard in process
over an in-memory etcd and broker, dead letters with odd headers, and garbage etcd records."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from droplet.broker.stub import StubBroker
from droplet.broker_config.names import DEAD_FROM_HEADER, DEAD_REASON_HEADER, QueueNames
from droplet.dashboard.app import Dashboard
from droplet.dashboard.dead_letters import DeadLetters
from droplet.dashboard.guard import Guard
from droplet.dashboard.sampler import Sampler
from droplet.proto import pb
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store.keys import StoreKeys
from droplet.store.memory import MemoryKV

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TOKEN = "s3cret-token-for-tests"


@dataclass
class Board:
    kv: MemoryKV
    broker: StubBroker
    names: QueueNames
    sampler: Sampler
    http: TestClient


@contextmanager
def open_board() -> Iterator[Board]:
    """A dashboard with actions (TOKEN) over an in-memory etcd and broker, sampled once."""
    settings = Settings(namespace="hostile")
    kv, broker, names = MemoryKV(), StubBroker(), QueueNames.of(settings)
    broker.declare_queue(names.dead)
    sampler = Sampler(settings, lambda: kv, broker.connect)
    dead = DeadLetters(broker.connect, names, Signer(None))
    app = Dashboard(sampler, dead, Guard(TOKEN)).app
    sampler.sample()
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Board(kv, broker, names, sampler, http)


ODD_HEADERS = [
    {"x-death": "not a list"},
    {"x-death": [1, 2]},
    {"x-death": []},
    {DEAD_FROM_HEADER: b"\xff\xfe<b>queue</b>", DEAD_REASON_HEADER: b"\xff<i>why</i>"},
    {DEAD_FROM_HEADER: 42, DEAD_REASON_HEADER: None},
]


def dead_letter(board: Board, body: bytes, headers: dict[str, Any]) -> None:
    """Publishes body straight into the dead-letter queue, with these headers."""
    board.broker.connect().publish(board.names.dead, body, headers=headers)


GARBAGE = b"\xff\xff\xff\xff"


def fleet_with_garbage(kv: MemoryKV, settings: Settings) -> None:
    """One good worker and one good DAG, and a record of each kind that is garbage bytes."""
    keys = StoreKeys(settings.etcd_prefix)
    kv.put(keys.worker("good"), pb.WorkerStatus(id="good", host="h").SerializeToString())
    dag = pb.Dag(name="d", functions=["f"])
    kv.put(keys.dag("d"), pb.DagRecord(dag=dag, ready=True).SerializeToString())
    for key in (keys.worker("bad"), keys.scheduler("bad"), keys.pin("bad"), keys.dag("bad")):
        kv.put(key, GARBAGE)


class AmqpNames:
    """A stub broker's connection that refuses a queue name over 255 bytes as the AMQP
    connection does (ValueError, before anything is sent); the stub itself takes any."""

    def __init__(self, broker: StubBroker) -> None:
        self._conn = broker.connect()

    def queue_depth(self, queue: str) -> int | None:
        if len(queue.encode()) > 255:
            raise ValueError(f"AMQP short string over 255 bytes: {queue[:40]!r}...")
        return self._conn.queue_depth(queue)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)
