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

import pytest

import droplet
from tests.conftest import Services, purge_namespace, start_cluster
from tests.e2e.test_crowded_fleet import assert_quick_calls_run_one_at_a_time

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


def test_a_one_slot_cluster_is_not_held_up_by_a_slot_held_outside_it(
        host_slot_held: None, services: Services, tmp_path: Path, unique: str) -> None:
    settings = services.settings(run_slots=1, queue_seats=0)  # (seats: test_seats.py)
    cluster = start_cluster(settings, tmp_path, workers=3)
    try:
        with droplet.connect(settings=settings) as client:
            assert_quick_calls_run_one_at_a_time(client, unique)
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())
