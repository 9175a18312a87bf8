"""Fixtures shared by the attack tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from droplet.cli.etcd_local import LocalEtcd
from tests.attack.dashboard_board import Board, open_board


@pytest.fixture
def etcd_members(tmp_path: Path) -> Iterator[list[LocalEtcd]]:
    """A 3-member etcd cluster of local processes, killed at the end: the members are thrown
    away, and a graceful stop of a cluster one of whose members a test SIGSTOPped took up to
    ~47 s. SIGKILL ends a stopped member too, and kill() passes over one a test already
    stopped or killed itself."""
    started = LocalEtcd.members(tmp_path / "etcd", 3)
    try:
        for member in started:
            member.start(wait=False)
        for member in started:
            member.wait_ready(60)
        yield started
    finally:
        for member in started:
            member.kill()


@pytest.fixture
def board() -> Iterator[Board]:
    """A dashboard in process over an in-memory etcd and broker (dashboard_board.py)."""
    with open_board() as opened:
        yield opened
