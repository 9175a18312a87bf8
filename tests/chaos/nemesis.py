"""The nemesis: a thread that injects one fault at a time, at random, and records each.

Faults come in shuffled rounds, one of each kind per round, so every kind is injected at the
same rate whatever the random gaps; with the defaults a round takes 20-30 s, i.e. every kind
at least twice a minute. Each fault is undone before the next (a paused worker is resumed,
etcd and RabbitMQ are started again), and stop() lets the fault in progress finish, so the
quiet period that follows always begins with every service up.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from droplet.cli.etcd_local import LocalEtcd
from tests.chaos.history import History
from tests.chaos.services import Fleet
from tests.private_rabbit import PrivateRabbit

KILL_NEW_ID = "kill-worker-new-id"
KILL_SAME_ID = "kill-worker-same-id"
KILL_SCHEDULER = "kill-scheduler"
PAUSE_WORKER = "pause-worker"
RESTART_ETCD = "restart-etcd"
RESTART_RABBITMQ = "restart-rabbitmq"
FAULT_KINDS = (KILL_NEW_ID, KILL_SAME_ID, KILL_SCHEDULER, PAUSE_WORKER, RESTART_ETCD,
               RESTART_RABBITMQ)


@dataclass
class NemesisConfig:
    gap_s: float = 1.5  # mean pause between two faults
    warmup_s: float = 3.0  # the workload gets going before the first fault
    lease_s: float = 3.0  # the workers' lease: a pause must outlast it
    same_id_delay_s: tuple[float, float] = (0.2, 1.5)  # restart inside the lease
    scheduler_restart_s: float = 1.0
    etcd_down_s: float = 2.0
    rabbit_down_s: float = 1.0
    targeted: float = 0.75  # share of worker faults aimed at a worker holding DAG state
    kinds: tuple[str, ...] = FAULT_KINDS  # which faults to inject
    seed: int = 0


class Nemesis:
    def __init__(self, fleet: Fleet, etcd: LocalEtcd, rabbit: PrivateRabbit | None,
                 history: History, config: NemesisConfig,
                 targets: Callable[[], list[str]] = list) -> None:
        self.fleet = fleet
        self.targets = targets
        self.etcd = etcd
        self.rabbit = rabbit
        self.history = history
        self.config = config
        self.rng = random.Random(config.seed)
        self.kinds = [k for k in config.kinds if rabbit is not None or k != RESTART_RABBITMQ]
        self.crashes: list[str] = []  # a fault that could not be injected or undone
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stops after the fault in progress has been undone."""
        self._stop.set()
        if self._thread.ident is None:
            return  # never started
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.crashes.append(f"nemesis still busy {timeout_s:g}s after stop()")

    def _run(self) -> None:
        if self._stop.wait(self.config.warmup_s):
            return
        while not self._stop.is_set():
            for kind in self.rng.sample(self.kinds, len(self.kinds)):
                if self._stop.is_set():
                    return
                self._inject(kind)
                if self._stop.wait(self.config.gap_s * self.rng.uniform(0.5, 1.5)):
                    return

    def _inject(self, kind: str) -> None:
        start = self.history.now()
        actions: dict[str, Callable[[], tuple[str, str]]] = {
            KILL_NEW_ID: self._kill_new_id, KILL_SAME_ID: self._kill_same_id,
            KILL_SCHEDULER: self._kill_scheduler, PAUSE_WORKER: self._pause_worker,
            RESTART_ETCD: self._restart_etcd, RESTART_RABBITMQ: self._restart_rabbit,
        }
        try:
            target, note = actions[kind]()
        except Exception as exc:
            self.crashes.append(f"{kind} at {start:.1f}s: {type(exc).__name__}: {exc}")
            self.history.fault(kind, "?", start, f"FAILED: {exc}")
            return
        self.history.fault(kind, target, start, note)

    def _victim(self) -> str:
        """A live worker; often one whose function waits for upstream results (partial DAG
        state lives there), as a targeted Jepsen nemesis would pick."""
        live = self.fleet.live_workers()
        if self.rng.random() < self.config.targeted:
            try:
                aimed = [w for w in self.targets() if w in live]
            except Exception:
                aimed = []  # etcd is away: any worker will do
            if aimed:
                return self.rng.choice(aimed)
        return self.rng.choice(live)

    def _kill_new_id(self) -> tuple[str, str]:
        victim = self._victim()
        self.fleet.kill_worker(victim)
        return victim, f"replaced by {self.fleet.add_worker()}"

    def _kill_same_id(self) -> tuple[str, str]:
        victim = self._victim()
        self.fleet.kill_worker(victim)
        delay = self.rng.uniform(*self.config.same_id_delay_s)
        time.sleep(delay)
        self.fleet.add_worker(victim)
        return victim, f"restarted under the same id after {delay:.1f}s"

    def _kill_scheduler(self) -> tuple[str, str]:
        live = self.fleet.live_schedulers()
        victim = self.rng.choice(live)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        time.sleep(self.config.scheduler_restart_s)
        replacement = self.fleet.cluster.start_scheduler()
        return f"scheduler pid {victim.pid}", f"replaced by pid {replacement.pid}"

    def _pause_worker(self) -> tuple[str, str]:
        victim = self._victim()
        paused_s = self.config.lease_s + self.rng.uniform(1.0, 3.0)
        self.fleet.signal_worker(victim, signal.SIGSTOP)
        try:
            time.sleep(paused_s)
        finally:
            self.fleet.signal_worker(victim, signal.SIGCONT)
        return victim, f"SIGSTOP for {paused_s:.1f}s (lease {self.config.lease_s:g}s)"

    def _restart_etcd(self) -> tuple[str, str]:
        self.etcd.kill()
        time.sleep(self.config.etcd_down_s)
        _again(self.etcd.start)
        return self.etcd.endpoint, f"down {self.config.etcd_down_s:g}s"

    def _restart_rabbit(self) -> tuple[str, str]:
        assert self.rabbit is not None
        rabbit = self.rabbit
        rabbit.ctl("stop_app")
        time.sleep(self.config.rabbit_down_s)
        _again(lambda: rabbit.ctl("start_app"))
        return self.rabbit.node, f"stop_app, {self.config.rabbit_down_s:g}s, start_app"


def _again(start: Callable[[], object], attempts: int = 3) -> None:
    """Starting a service again must not fail for good on one hiccup: the rest of the run
    (and the checker) needs it up."""
    for attempt in range(attempts):
        try:
            start()
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(2)
