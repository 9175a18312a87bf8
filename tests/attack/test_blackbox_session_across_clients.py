"""Attack (end to end): one session (`client_id`) used from two client objects.

README, Using it: "`client_id="..."` sessions: calls carrying the same client id never read a
value older than one their session has already seen or written (read-your-writes and
monotonic reads), whichever workers they run on." The floor a session's calls carry
(`min_revision`) is kept in the client object that made them (client/sessions.py), so a
second client calling with the same client id (another process of the same app, a client
made again after a crash) carried none, and a worker whose cache had not yet caught up read
back in time: here the reader's worker is paused (SIGSTOP) while the session writes on
another worker, and resumed with the session's read waiting in its queue; before the fix, 6
of 24 reads from a second client returned the old value, none from the same client (the
control). Now a client object's first call in a session starts at the store's revision.
Run: DROPLET_TEST_SERVICES=local .venv/bin/python -m pytest -q
     tests/attack/test_blackbox_session_across_clients.py
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import droplet
from droplet.cli.status import collect
from tests.conftest import Services, purge_namespace, start_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _writer(lib: Any, key: str, value: str) -> str:
    lib.put(key, value)
    return str(lib.getid())


def _reader(lib: Any, key: str) -> tuple[Any, str]:
    return lib.get(key), str(lib.getid())


def _stale_reads(services: Services, tmp_path: Path, unique: str, other_client: bool) -> int:
    settings = services.settings(worker_lease_ttl_s=5, status_interval_s=0.5)
    cluster = start_cluster(settings, tmp_path, workers=3)
    stale = 0
    try:
        with droplet.connect(settings=settings) as one, \
                droplet.connect(settings=settings) as two:
            w, r = unique + "-w", unique + "-r"
            one.register(_writer, w)
            one.register(_reader, r)
            assert one.register_dag(w, [w], []) == (True, None)
            assert one.register_dag(r, [r], []) == (True, None)
            writer_at = one.call_dag(w, {w: ["k0", 0]}, direct_response=True, timeout=20)
            _, reader_at = one.call_dag(r, {r: ["k0"]}, direct_response=True, timeout=20)
            assert writer_at != reader_at
            pid = {x["id"]: x["pid"] for x in collect(settings)["workers"]}[reader_at]
            for i in range(24):
                key, session = f"{unique}-k{i}", f"{unique}-s{i}"
                one.put_object(key, "old")
                one.call_dag(r, {r: [key]}, direct_response=True, timeout=20)  # cached there
                os.kill(pid, signal.SIGSTOP)
                try:
                    one.call_dag(w, {w: [key, "new"]}, client_id=session).get(timeout=20)
                    reading = (two if other_client else one).call_dag(
                        r, {r: [key]}, client_id=session)
                    time.sleep(0.3)
                finally:
                    os.kill(pid, signal.SIGCONT)
                value, _ = reading.get(timeout=20)
                stale += value != "new"
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())
    return stale


def test_control_one_client_reads_its_sessions_writes(
    services: Services, tmp_path: Path, unique: str
) -> None:
    assert _stale_reads(services, tmp_path, unique, other_client=False) == 0


def test_a_second_client_in_the_same_session_reads_its_writes(
    services: Services, tmp_path: Path, unique: str
) -> None:
    assert _stale_reads(services, tmp_path, unique, other_client=True) == 0
