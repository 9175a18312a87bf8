"""The chaos history test: a workload and a nemesis against a real fleet, then the checker.

    pytest -s -m chaos tests/chaos                      # 45 s of faults (the default)
    DROPLET_CHAOS_S=180 pytest -s -m chaos tests/chaos  # the long form
    DROPLET_CHAOS_FAULTS=0 ...                          # the same workload, no nemesis

It owns everything it runs on: a private etcd (restarted by the nemesis), a private RabbitMQ
node (restarted too; when none can be started the machine's broker is used and broker
restarts are skipped, which the table says), 2 schedulers and DROPLET_CHAOS_WORKERS workers
(6: the workload's two DAGs pin 5 functions, one per worker, and pins need a spare worker to
move to). Everything is stopped and deleted at the end, pass or fail; DROPLET_CHAOS_KEEP=1
keeps the logs and says where. DROPLET_CHAOS_KINDS=kill-worker-same-id,... limits the nemesis
to some fault kinds; DROPLET_CHAOS_PRIVATE_BROKER=0 uses the machine's broker (no restarts).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

import droplet
from droplet.cli.etcd_local import LocalEtcd
from droplet.settings import DEFAULT_BROKER_URL, Settings
from tests.chaos.checker import Checker
from tests.chaos.history import History
from tests.chaos.nemesis import FAULT_KINDS, Nemesis, NemesisConfig
from tests.chaos.report import render
from tests.chaos.services import (
    Fleet,
    broker_answers,
    shared_queue_depths,
    waiting_workers,
)
from tests.chaos.workload import Workload, WorkloadConfig
from tests.private_rabbit import PrivateRabbit, QueueDepths

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.chaos]

DURATION_S = float(os.environ.get("DROPLET_CHAOS_S", "45"))
FAULTS = os.environ.get("DROPLET_CHAOS_FAULTS", "1") != "0"
WORKERS = int(os.environ.get("DROPLET_CHAOS_WORKERS", "6"))
# A comma-separated subset of nemesis.FAULT_KINDS, to study one fault at a time.
KINDS = tuple(k for k in os.environ.get("DROPLET_CHAOS_KINDS", "").split(",") if k)
SCHEDULERS = 2
LEASE_S = 3
QUIET_S = 15.0
OP_TIMEOUT_S = 90.0


def _broker(base: Path, history: History, stack: ExitStack
            ) -> tuple[PrivateRabbit | None, str, Callable[[], QueueDepths] | None]:
    """A private node when one starts; else the machine's broker, never restarted
    (DROPLET_CHAOS_PRIVATE_BROKER=0 asks for that directly)."""
    why = "DROPLET_CHAOS_PRIVATE_BROKER=0"
    if os.environ.get("DROPLET_CHAOS_PRIVATE_BROKER", "1") != "0":
        rabbit = PrivateRabbit(base / "rabbitmq", label="chaos")
        stack.callback(rabbit.stop)
        try:
            return rabbit.start(), rabbit.url, rabbit.list_queues
        except Exception as exc:
            rabbit.stop()
            why = f"no private RabbitMQ node ({type(exc).__name__}: {exc})"
    history.note(f"{why}: using the machine's broker, RabbitMQ restarts SKIPPED")
    url = os.environ.get("DROPLET_BROKER_URL", DEFAULT_BROKER_URL)
    if not broker_answers(url):
        pytest.skip(f"{why}, and no broker answers at {url}")
    depths = shared_queue_depths if shutil.which("rabbitmqctl") else None
    if depths is None:
        history.note("no rabbitmqctl: queue depths NOT checked")
    return None, url, depths


def _temp_dir(stack: ExitStack) -> Path:
    base = Path(tempfile.mkdtemp(prefix="droplet-chaos-"))
    if os.environ.get("DROPLET_CHAOS_KEEP") == "1":
        stack.callback(print, f"chaos run files kept in {base}")
    else:
        stack.callback(shutil.rmtree, base, True)
    return base


@pytest.mark.timeout(DURATION_S + OP_TIMEOUT_S + 420)
def test_history_under_faults() -> None:
    history = History()
    salt = random.randrange(1_000_000, 9_000_000)
    with ExitStack() as stack:
        base = _temp_dir(stack)
        etcd = LocalEtcd(base / "etcd" / "data").start()
        stack.callback(etcd.stop)
        rabbit, broker_url, queue_depths = _broker(base, history, stack)
        settings = Settings(broker_url=broker_url, etcd_endpoints=(etcd.endpoint,),
                            namespace=f"chaos{uuid.uuid4().hex[:8]}",
                            worker_lease_ttl_s=LEASE_S, status_interval_s=0.5)
        (base / "logs").mkdir()
        fleet = Fleet(settings, base / "logs")
        if rabbit is None:  # queues on the shared broker must not outlive the run
            stack.callback(_quietly, fleet.purge)
        stack.callback(fleet.stop)
        fleet.start(WORKERS, SCHEDULERS)

        workload = Workload(settings, history, WorkloadConfig(op_timeout_s=OP_TIMEOUT_S),
                            salt)
        workload.setup()
        observer = stack.enter_context(droplet.connect(settings=settings))
        nemesis = Nemesis(fleet, etcd, rabbit, history,
                          NemesisConfig(lease_s=LEASE_S, seed=salt, kinds=KINDS or FAULT_KINDS),
                          targets=lambda: waiting_workers(observer))
        stack.callback(workload.stop)
        stack.callback(nemesis.stop)
        history.start_clock()
        workload.start()
        if FAULTS:
            nemesis.start()
        else:
            history.note("DROPLET_CHAOS_FAULTS=0: no faults injected")
        time.sleep(DURATION_S)
        nemesis.stop()
        workload.stop()
        drained = workload.join(OP_TIMEOUT_S + 30)
        time.sleep(QUIET_S)  # the fleet heals: leases lapse, pins move, queues drain

        with droplet.connect(settings=settings) as client:
            found = Checker(history, client, workload.accounts,
                            workload.config.initial_balance, salt, queue_depths).run()
        title = (f"chaos run: {DURATION_S:g}s, faults {'on' if FAULTS else 'off'}, "
                 f"{WORKERS} workers, {SCHEDULERS} schedulers, lease {LEASE_S}s, "
                 f"broker {'private node ' + rabbit.node if rabbit else 'shared'}")
        report = render(history, found, title, DURATION_S)
        print("\n" + report)
        if path := os.environ.get("DROPLET_CHAOS_REPORT"):
            Path(path).write_text(report + "\n")

    assert drained, "client threads still waiting after the op timeout"
    assert not workload.crashes, workload.crashes
    assert not nemesis.crashes, nemesis.crashes
    anomalies = {kind: len(found_) for kind, found_ in found.items() if found_}
    assert not anomalies, f"anomalies: {anomalies}"


def _quietly(action: Callable[[], None]) -> None:
    """Clean-up that must not hide the test's own failure."""
    try:
        action()
    except Exception as exc:
        print(f"clean-up failed: {exc}")
