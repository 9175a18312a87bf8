"""Attack (real scheduler and workers, real RabbitMQ and etcd): a client streams calls of a DAG
while the DAG is deleted and registered again under its name with another definition, by
another client or by a thread of the caller's own client.

Checked: no call started after a registration was answered runs the definition before it
(the client's view of DAGs is read again by a thread of its own since df154ac, and may be
up to a couple of seconds old; the worker runs a client's trigger only for the very DAG it is
pinned for, worker/direct.py), no call hangs, and a call between delete and register is
answered NO_SUCH_DAG (or runs the new definition).
Run: .venv/bin/python -m pytest -q tests/attack/test_dag_re_registered_under_a_stream.py
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import droplet
from droplet.errors import DropletError
from tests.conftest import Cluster, cluster_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

cluster = cluster_fixture(workers=3, scope="module", worker_lease_ttl_s=3,
                          status_interval_s=0.5)


def _versions(client: Any, unique: str) -> list[tuple[list[str], list[tuple[str, str]]]]:
    client.register(lambda lib, x: x + 1, unique + "-incr")
    client.register(lambda lib, x: x * x, unique + "-square")
    client.register(lambda lib, x: -x, unique + "-neg")
    return [([unique + "-incr", unique + "-square"], [(unique + "-incr", unique + "-square")]),
            ([unique + "-incr", unique + "-neg"], [(unique + "-incr", unique + "-neg")])]


def _expected(version: int, x: int) -> int:
    return (x + 1) ** 2 if version == 0 else -(x + 1)


def _register(client: Any, dag: str, spec: Any) -> None:
    deadline = time.monotonic() + 30
    while True:
        ok, error = client.register_dag(dag, *spec)
        if ok:
            return
        assert time.monotonic() < deadline, f"register_dag kept failing: {error}"
        time.sleep(0.2)


def _stream(cluster: Cluster, registrar: Any, caller: Any, unique: str, switches: int,
            pause_s: float, callers: int = 1) -> None:
    dag = unique + "-dag"
    specs = _versions(registrar, unique)
    _register(registrar, dag, specs[0])
    # [start, end): registrations answered, as (answered_at, version); changes begin at begun.
    answered: list[tuple[float, int]] = [(time.monotonic(), 0)]
    begun: list[float] = []
    stop = threading.Event()
    wrong: list[str] = []
    outcomes: dict[str, int] = {}
    lock = threading.Lock()

    def calls(offset: int) -> None:
        x = offset
        while not stop.is_set():
            x += callers
            start = time.monotonic()
            try:
                got = caller.call_dag(dag, {unique + "-incr": [x]}, direct_response=True,
                                      timeout=20)
            except DropletError as exc:
                with lock:
                    outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
                continue
            except Exception as exc:  # a timeout, say
                wrong.append(f"call {x}: {exc!r}")
                continue
            end = time.monotonic()
            # the version answered last before the call began, if no change began before it
            # ended
            current = max((a for a in answered if a[0] <= start), default=None)
            changing = any(b <= end and a >= start
                           for b, (a, _v) in zip(begun, answered[1:], strict=False)) or (
                len(begun) == len(answered))  # a change under way, not answered yet
            if current is not None and not changing and got != _expected(current[1], x):
                wrong.append(f"call {x}: {got} where version {current[1]} gives "
                             f"{_expected(current[1], x)}")
            with lock:
                outcomes["ok"] = outcomes.get("ok", 0) + 1

    direct = [0]
    send_direct = caller.pump.send_direct

    def counted(*args: Any, **kwargs: Any) -> Any:
        with lock:
            direct[0] += 1
        return send_direct(*args, **kwargs)

    caller.pump.send_direct = counted
    threads = [threading.Thread(target=calls, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    try:
        for switch in range(1, switches + 1):
            time.sleep(pause_s)
            version = switch % 2
            begun.append(time.monotonic())
            assert registrar.delete_dag(dag) == (True, None)
            _register(registrar, dag, specs[version])
            answered.append((time.monotonic(), version))
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        registrar.delete_dag(dag)  # its pins free the workers for the next test
    assert not any(t.is_alive() for t in threads), "a call hung"
    assert not wrong, wrong
    assert outcomes.get("ok", 0) > 10
    assert direct[0] > outcomes["ok"] // 2, "the stream did not go straight to workers"


def test_another_client_re_registers_the_dag_under_a_stream(cluster: Cluster,
                                                            unique: str) -> None:
    with droplet.connect(settings=cluster.settings) as caller, \
            droplet.connect(settings=cluster.settings) as registrar:
        _stream(cluster, registrar, caller, unique, switches=8, pause_s=1.3)


def test_the_callers_own_client_re_registers_the_dag_under_streams_of_its_threads(
        cluster: Cluster, unique: str) -> None:
    with droplet.connect(settings=cluster.settings) as caller:
        _stream(cluster, caller, caller, unique, switches=8, pause_s=1.3, callers=4)
