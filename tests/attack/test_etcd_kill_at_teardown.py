"""Attack (real etcd processes): the etcd_members fixture ends its members with kill(), which
must end a SIGSTOPped member at once and pass over one a test already stopped or killed
itself (no ProcessLookupError, no wait). A graceful stop after SIGCONT took up to ~47 s."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from droplet.cli.etcd_local import LocalEtcd, find_etcd_binary

pytestmark = [
    pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(60),
    pytest.mark.skipif(find_etcd_binary() is None, reason="needs an etcd binary"),
]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_kill_ends_a_stopped_member_and_passes_over_an_ended_one(tmp_path: Path) -> None:
    stopped, ended, killed = (LocalEtcd(tmp_path / name).start(20)
                              for name in ("stopped", "ended", "killed"))
    assert stopped.pid is not None and ended.pid is not None and killed.pid is not None
    pids = [stopped.pid, ended.pid, killed.pid]
    os.kill(stopped.pid, signal.SIGSTOP)
    ended.stop()
    os.kill(killed.pid, signal.SIGKILL)  # by the test, behind LocalEtcd's back
    time.sleep(0.2)

    began = time.monotonic()
    for member in (stopped, ended, killed, stopped):  # twice: the second kill is a no-op
        member.kill()
    took = time.monotonic() - began

    assert took < 3, f"killing the members took {took:.1f} s"
    assert all(_gone(pid) for pid in pids)
