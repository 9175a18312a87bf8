"""Fixtures shared by the attack tests."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from droplet.cli.etcd_local import LocalEtcd


@pytest.fixture
def etcd_members(tmp_path: Path) -> Iterator[list[LocalEtcd]]:
    """A 3-member etcd cluster of local processes; a member a test SIGSTOPped is continued
    before everything stops."""
    started = LocalEtcd.members(tmp_path / "etcd", 3)
    try:
        for member in started:
            member.start(wait=False)
        for member in started:
            member.wait_ready(60)
        yield started
    finally:
        for member in started:
            if member.pid is not None:
                os.kill(member.pid, signal.SIGCONT)
            member.stop()
