"""Attack: careless user code raises SystemExit or KeyboardInterrupt where the worker did not
contain it.

`raise KeyboardInterrupt` in a function, a result whose `__reduce__` calls sys.exit(), an
argument whose loading does, a class whose `__init__` does: each exited the `droplet worker`
process that ran it, then each worker the call was redelivered to (six, with three workers
replaced by `droplet up` as they died), and the caller got "refused: delivered 6 times without
completing ... it may crash the worker" instead of the cause. README: "Misuse ... fails that
call with EXECUTION_ERROR; the worker is never hurt". Unit level:
tests/unit/test_user_base_exceptions.py.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

import droplet
from tests.conftest import Cluster, cluster_fixture

one_worker = cluster_fixture(workers=1, worker_lease_ttl_s=3, status_interval_s=0.5)


def _exit_on_load() -> None:
    sys.exit("exit on load")


def _cases() -> list[tuple[str, Any, tuple[Any, ...], str]]:
    """(name, function, arguments, what the error names); classes made here travel by value."""

    class ExitsWhenPickled:
        def __reduce__(self) -> Any:
            raise SystemExit("hostile reduce")

    class ExitsWhenLoaded:
        def __reduce__(self) -> Any:
            return (_exit_on_load, ())

    class ExitsInInit:
        def __init__(self) -> None:
            raise SystemExit("init exit")

        def run(self, lib: Any) -> int:
            return 1

    def interrupts(lib: Any) -> None:
        raise KeyboardInterrupt("from the function")

    return [
        ("interrupts", interrupts, (), "KeyboardInterrupt: from the function"),
        ("hostile_result", lambda lib: ExitsWhenPickled(), (), "SystemExit: hostile reduce"),
        ("hostile_argument", lambda lib, x: 1, (ExitsWhenLoaded(),), "SystemExit: exit on load"),
        ("hostile_init", ExitsInInit, (), "init exit"),
    ]


@pytest.mark.timeout(120)
def test_hostile_user_code_fails_its_call_and_spares_the_worker(one_worker: Cluster) -> None:
    worker = one_worker.workers[0]
    with droplet.connect(settings=one_worker.settings) as client:
        where = client.register(lambda lib: lib.getid(), "where")
        first = where().get(timeout=20)
        for name, function, args, cause in _cases():
            handle = client.register(function, name)
            with pytest.raises(droplet.ExecutionError, match=cause):
                handle(*args).get(timeout=20)
            assert worker.poll() is None, f"{name}: the worker exited ({worker.returncode})"
            assert where().get(timeout=20) == first
