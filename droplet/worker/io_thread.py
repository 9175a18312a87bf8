"""The worker's I/O thread: it alone touches the broker connection.

It polls deliveries and hands them to the main thread; the main thread hands back jobs
(publish these, ack those) that run on this thread in submission order. Each connection has
a generation: a job for a connection that has since been replaced is dropped, because the
broker has already requeued that connection's unacked deliveries.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from droplet.broker.interface import BrokerConnection, ConnectionFactory, Delivery
from droplet.broker.session import run_with_reconnect
from droplet.errors import DropletError

log = logging.getLogger(__name__)

Job = Callable[[BrokerConnection], None]


class IoThread:
    def __init__(
        self,
        name: str,
        connect: ConnectionFactory,
        setup: Callable[[BrokerConnection], None],
        deliver: Callable[[int, list[Delivery]], None],
    ) -> None:
        self._name = name
        self._connect = connect
        self._setup = setup
        self._deliver = deliver
        self._lock = threading.Lock()
        self._jobs: deque[tuple[int, Job]] = deque()
        self._conn: BrokerConnection | None = None
        self.generation = 0
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once the first connection is set up
        self._thread = threading.Thread(target=self._run, daemon=True, name="worker-io")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Lets queued jobs run (publishes, acks), then closes the connection."""
        waited = 0.0
        while self._jobs and waited < timeout_s:
            self._stop.wait(0.01)
            waited += 0.01
        self._stop.set()
        self._thread.join(timeout=timeout_s)

    def submit(self, generation: int, job: Job) -> None:
        """Queues job(conn) for this thread; dropped if that connection is gone."""
        with self._lock:
            conn = self._conn
            if conn is None or generation != self.generation:
                return
            self._jobs.append((generation, job))
        try:
            conn.call_soon_threadsafe(self._run_jobs)
        except DropletError:
            log.debug("connection closed before a job could be scheduled")

    def _run(self) -> None:
        run_with_reconnect(self._name, self._connect, self._session, self._stop)

    def _session(self, conn: BrokerConnection) -> None:
        self._setup(conn)
        with self._lock:
            self.generation += 1
            generation = self.generation
            self._conn = conn
        self.ready.set()
        try:
            while not self._stop.is_set():
                deliveries = conn.poll(0.2)
                if deliveries:
                    self._deliver(generation, deliveries)
        finally:
            with self._lock:
                self._conn = None
                self._jobs.clear()

    def _run_jobs(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    return
                generation, job = self._jobs.popleft()
                conn = self._conn
            if conn is not None and generation == self.generation:
                job(conn)
