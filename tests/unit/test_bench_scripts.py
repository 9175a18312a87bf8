"""A peer's script that the bench stops (its time limit, the bench's SIGTERM or Ctrl-C) stops
the worker it started: `subprocess.run` SIGKILLed the script at once, its `finally` never ran,
and the worker (here in a session of its own, as dramatiq_bench.py starts Dramatiq's) was left
running for ever."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from droplet.cli.bench_scripts import run_script
from tests.conftest import ROOT
from tests.processes import exited

_PEER = '''import subprocess, sys, time
from pathlib import Path
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                          start_new_session=True)
Path(__file__).with_name("worker.pid").write_text(str(worker.pid))
try:
    time.sleep(120)
finally:
    worker.terminate()
    worker.wait()
'''


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "celery_bench.py").write_text(_PEER)
    yield tmp_path
    if (tmp_path / "worker.pid").exists():  # (a worker the test saw outlive it)
        with contextlib.suppress(ProcessLookupError):
            os.kill(int((tmp_path / "worker.pid").read_text()), signal.SIGKILL)


def _worker(folder: Path, timeout_s: float = 10.0) -> int:
    deadline = time.monotonic() + timeout_s
    while not (folder / "worker.pid").exists():
        assert time.monotonic() < deadline, "the peer's script did not start its worker"
        time.sleep(0.05)
    return int((folder / "worker.pid").read_text())


def _ended(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not exited(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return exited(pid)


def test_a_script_out_of_time_stops_its_worker(peer: Path) -> None:
    script = peer / "celery_bench.py"
    with pytest.raises(subprocess.TimeoutExpired):
        run_script([sys.executable, str(script)], dict(os.environ), str(peer), timeout_s=2)
    assert _ended(_worker(peer)), "the worker of a script out of time outlived it"


def test_a_bench_terminated_during_a_peer_stops_the_peers_worker(
        peer: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Started as nohup or `&` start it, SIGINT ignored: the script is interrupted all the same."""
    log = tmp_path_factory.mktemp("bench") / "stderr.txt"
    with log.open("w") as err:
        bench = subprocess.Popen(
            [sys.executable, "-m", "droplet.cli.main", "bench", "--quick", "--rounds", "2",
             "--peers", str(peer)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        worker = _worker(peer, timeout_s=30)
        time.sleep(0.3)  # (the script in its sleep, past its `try`)
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(30) == 130, log.read_text()
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert _ended(worker), "the peer's worker outlived the bench"
