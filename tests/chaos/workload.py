"""Client threads that issue a mix of operations through the public API and record them.

Each client has its own `droplet.connect()` and runs every op in a thread of its own, up to
`in_flight` at a time: an op that hangs (lost after `op_timeout_s`) holds one slot instead of
stopping the client, and waiting starts when the call is sent, as in an application. Its
client_id session runs in one more thread, one op at a time, since its guarantees are about
order. Ops: plain calls (`call().get()`, back-to-back bursts that travel batched, `exec_func`
then reading the key), the linear DAG (direct, future, or under an output key reused from a
small pool), the fan-in DAG, MULTI transfers, and session writes and reads of a counter.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import droplet
from tests.chaos import functions as fx
from tests.chaos.history import History, Op, settle


@dataclass
class WorkloadConfig:
    clients: int = 6
    in_flight: int = 3  # ops at a time per client, besides its session
    accounts: int = 8
    initial_balance: int = 1000
    op_timeout_s: float = 90.0  # after this a client gives up: the op is lost
    outkey_pool: int = 3  # output keys reused per client: stale results show up
    slow_every_s: float = 10.0  # at most one slow chain step per this many seconds
    pause_s: float = 0.05  # between two ops of a client, to keep the load moderate
    weights: tuple[tuple[str, int], ...] = (("plain", 35), ("chain", 30), ("fan", 10),
                                            ("xfer", 25))


class Workload:
    def __init__(self, settings: droplet.Settings, history: History,
                 config: WorkloadConfig, salt: int) -> None:
        self.settings = settings
        self.history = history
        self.config = config
        self.salt = salt
        self.accounts = [fx.account(n) for n in range(config.accounts)]
        self.crashes: list[str] = []  # exceptions that escaped an op: bugs of the checker
        self.stopping = threading.Event()
        self.slow = fx.SlowSteps(config.slow_every_s)
        self._threads: list[threading.Thread] = []

    def setup(self) -> None:
        """Registers functions and DAGs and stores the opening balances."""
        with droplet.connect(settings=self.settings) as client:
            fx.register_all(client, self.salt)
            client.put_objects({a: self.config.initial_balance for a in self.accounts})

    def start(self) -> None:
        for n in range(self.config.clients):
            thread = threading.Thread(target=self._client, args=(n,), daemon=True,
                                      name=f"chaos-client-{n}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stops issuing; ops in flight run to their outcome (or their timeout)."""
        self.stopping.set()

    def join(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _client(self, n: int) -> None:
        try:
            with droplet.connect(settings=self.settings) as client:
                _Client(self, client, n).run()
        except BaseException as exc:
            self.crashes.append(f"client {n}: {type(exc).__name__}: {exc}")


class _Client:
    """One client: its dispatcher, its op threads, its output keys and its session."""

    def __init__(self, workload: Workload, client: Any, n: int) -> None:
        self.w = workload
        self.h = workload.history
        self.c = client
        self.n = n
        self.rng = random.Random(workload.salt + n)
        self.slots = threading.Semaphore(workload.config.in_flight)
        self.lock = threading.Lock()
        self.pool = [f"out-{n}-{k}" for k in range(workload.config.outkey_pool)]
        self.busy_keys: set[str] = set()  # output keys of ops in flight: one op per key
        self.used_keys: set[str] = set()
        self.session, self.session_key, self.counter = f"s-{n}", f"sess-{n}", 0

    def run(self) -> None:
        threads = [self._spawn(self._sessions)]
        kinds = [k for k, _ in self.w.config.weights]
        weights = [w for _, w in self.w.config.weights]
        while not self.w.stopping.is_set():
            if self.slots.acquire(timeout=0.2):
                threads.append(self._spawn(self._one, self.rng.choices(kinds, weights)[0]))
                threads = [t for t in threads if t.is_alive()]
            time.sleep(self.w.config.pause_s)
        for thread in threads:
            thread.join()

    def _spawn(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        (thread := threading.Thread(target=target, args=args, daemon=True)).start()
        return thread

    def _one(self, kind: str) -> None:
        try:
            getattr(self, "_" + kind)()
        except BaseException as exc:
            self.w.crashes.append(f"{kind} op of client {self.n}: {type(exc).__name__}: {exc}")
        finally:
            self.slots.release()

    def _run(self, op: Op, run: Callable[[float], Any]) -> None:
        settle(self.h, op, run, self.w.config.op_timeout_s)

    # -- plain calls -----------------------------------------------------------------------

    def _plain(self) -> None:
        how = self.rng.random()
        if how < 0.5:
            self._calls("call-get", 1)
        elif how < 0.75:
            self._calls("call-burst", 4)
        else:
            x = self.h.next_number()
            op = self.h.begin("exec-func", self.n, {"x": x},
                              expected=fx.plain_expected(x, self.w.salt))

            def exec_func(remaining: float) -> Any:
                op.store_key = self.c.exec_func(fx.PLAIN, [x])
                return self._poll(op.store_key, remaining)

            self._run(op, exec_func)

    def _calls(self, kind: str, count: int) -> None:
        """`count` calls sent back to back (they travel batched), then waited for."""
        xs = [self.h.next_number() for _ in range(count)]
        ops = [self.h.begin(kind, self.n, {"x": x}, expected=fx.plain_expected(x, self.w.salt))
               for x in xs]
        futures: list[Any] = []
        for op, x in zip(ops, xs, strict=True):
            try:
                futures.append(self.c.call(fx.PLAIN, x))
                op.store_key = futures[-1].response_id
            except Exception as exc:  # sending failed: that is the op's outcome
                futures.append(exc)
        for op, future in zip(ops, futures, strict=True):
            self._run(op, future.get if not isinstance(future, Exception) else _raiser(future))

    def _poll(self, key: str, remaining: float) -> Any:
        """Reads an exec_func result key until it is there (a stored error raises)."""
        deadline = time.monotonic() + remaining
        while True:
            try:
                value = self.c.get_object(key)
            except droplet.StoreError:
                value = None  # etcd is away: keep trying until the op's time is up
            if value is not None:
                return value
            if time.monotonic() > deadline:
                raise droplet.DropletTimeoutError(f"no result under {key!r}")
            time.sleep(0.1)

    # -- DAGs ------------------------------------------------------------------------------

    def _dag(self, op: Op, name: str, args: dict[str, list[Any]], direct: bool,
             **options: Any) -> None:
        """A DAG call answered directly, or through a future (whose key is then stored)."""
        def run(remaining: float) -> Any:
            if direct:
                return self.c.call_dag(name, args, direct_response=True, timeout=remaining,
                                       **options)
            future = self.c.call_dag(name, args, **options)
            op.store_key = future.response_id
            return future.get(timeout=remaining)

        self._run(op, run)

    def _chain(self) -> None:
        x = self.h.next_number()
        expected = fx.chain_expected(x, self.w.salt)
        how = self.rng.random()
        with self.lock:
            free = [k for k in self.pool if k not in self.busy_keys]
            key = self.rng.choice(free) if free and how >= 0.5 else None
            # Now and then a slow step under a key written before: a client that reads the
            # key before the call has ended gets the previous call's value.
            slow = key in self.used_keys and self.w.slow.take()
            if key is not None:
                self.busy_keys.add(key)
                self.used_keys.add(key)
        args = {fx.LINE_A: ["chain", x, slow]}
        if key is None:
            kind = "chain-direct" if how < 0.25 else "chain-future"
            op = self.h.begin(kind, self.n, {"x": x}, expected=expected)
            self._dag(op, fx.LINE_DAG, args, kind == "chain-direct")
            return
        op = self.h.begin("chain-outkey", self.n, {"x": x, "key": key, "slow": slow},
                          expected=expected, store_key=key, check={"output_key": key})
        try:
            self._dag(op, fx.LINE_DAG, args, False, output_key=key)
        finally:
            with self.lock:
                self.busy_keys.discard(key)

    def _fan(self) -> None:
        x = self.h.next_number()
        direct = self.rng.random() < 0.5
        op = self.h.begin("fan-direct" if direct else "fan-future", self.n, {"x": x},
                          expected=fx.fan_expected(x))
        self._dag(op, fx.FAN_DAG, {fx.FAN_S1: [x], fx.FAN_S2: [x], fx.FAN_J: [x]}, direct)

    def _xfer(self) -> None:
        src, dst = self.rng.sample(self.w.accounts, 2)
        amount = self.rng.randint(1, 50)
        direct = self.rng.random() < 0.5
        op = self.h.begin("xfer-direct" if direct else "xfer-future", self.n,
                          {"src": src, "dst": dst, "amount": amount})
        op.check.update(marker=fx.marker(op.id), amount=amount, src=src, dst=dst)
        self._dag(op, fx.LINE_DAG, {fx.LINE_A: ["xfer", op.id, src, dst, amount]}, direct,
                  consistency=droplet.MULTI)

    # -- the session -----------------------------------------------------------------------

    def _sessions(self) -> None:
        while not self.w.stopping.is_set():
            try:
                self._session_op()
            except BaseException as exc:
                self.w.crashes.append(f"session of client {self.n}: {exc!r}")
                return
            time.sleep(self.w.config.pause_s * 5)

    def _session_op(self) -> None:
        """A write of the next counter value, or a read of it, in this client's session."""
        direct = self.rng.random() < 0.5
        if self.counter == 0 or self.rng.random() < 0.4:
            self.counter += 1
            args = ["swrite", self.session_key, self.counter]
            op = self.h.begin("swrite", self.n, {"session": self.session,
                                                 "value": self.counter}, expected=self.counter)
        else:
            args = ["sread", self.session_key]
            op = self.h.begin("sread", self.n, {"session": self.session})
        op.check.update(session=self.session, session_op=op.kind)
        self._dag(op, fx.LINE_DAG, {fx.LINE_A: args}, direct, client_id=self.session)


def _raiser(exc: Exception) -> Callable[[float], Any]:
    def run(_remaining: float) -> Any:
        raise exc

    return run
