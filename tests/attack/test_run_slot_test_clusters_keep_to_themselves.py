"""The cluster tests' workers take run slots (worker/slots.py) in a temporary directory of
their own cluster, not the host's: every droplet worker of the user on the host shares the
host's slot file, so another test run, another checkout's tests or a `droplet up` fleet
holding a slot there made the one-slot test's workers wait out wait_s, run without a slot
for 10 s, and overlap (a failure that had nothing to do with the code under test)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import droplet
from tests.conftest import Services, purge_namespace, start_cluster

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(sys.platform != "linux", reason="POSIX record locks, Linux")]

_LOCKER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def host_slot_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The host's temporary directory (here a stand-in for it) with its slot 0 held by a
    process outside the test's cluster, for the whole test."""
    host_tmp = tmp_path / "host-tmp"
    host_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(host_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(host_tmp / f"droplet-run-slots-{os.getuid()}")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        yield
    finally:
        locker.kill()
        locker.wait(10)
        if locker.stdout is not None:
            locker.stdout.close()


def _overlaps(runs: list[tuple[int, float, float]]) -> int:
    ordered = sorted(runs, key=lambda run: run[1])
    return sum(1 for i, (pid, _, end) in enumerate(ordered)
               for other, start, _ in ordered[i + 1:] if other != pid and start < end)


def test_a_one_slot_cluster_is_not_held_up_by_a_slot_held_outside_it(
        host_slot_held: None, services: Services, tmp_path: Path, unique: str) -> None:
    settings = services.settings(run_slots=1)
    cluster = start_cluster(settings, tmp_path, workers=3)
    try:
        with droplet.connect(settings=settings) as client:
            def spin(lib: Any, x: int) -> tuple[int, float, float]:
                import os
                import time as t

                start = t.time()
                until = t.thread_time() + 0.0005
                while t.thread_time() < until:
                    pass
                return os.getpid(), start, t.time()

            client.register(spin, unique)
            for _ in range(3):  # every worker learns that spin is quick
                [f.get(timeout=60) for f in [client.call(unique, i) for i in range(60)]]
            runs = [tuple(f.get(timeout=60))
                    for f in [client.call(unique, i) for i in range(300)]]
            assert len({pid for pid, _, _ in runs}) >= 2, "the burst reached several workers"
            assert _overlaps(runs) == 0, f"{_overlaps(runs)} pairs of runs overlapped"
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())
