"""The machine-speed sampler of `droplet bench` must end with its bench however the bench
ends (killed while the sampler's interpreter is still starting, Ctrl-C), leave no file behind
in the temporary directory, and keep a Ctrl-C quiet (the bench says why it stopped)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from droplet.cli.bench_speed import SpeedLog
from tests.processes import exited

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _waitexited(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while not exited(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return exited(pid)


def _run(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # (The sampler's file is made in TMPDIR. Its stderr is the bench's: a sampler that lives on
    # keeps it open, and a reader of the bench's stderr waits for ever.)
    env = dict(os.environ, TMPDIR=str(tmp_path))
    return subprocess.run([sys.executable, "-c", script], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, timeout=30, check=True,
                          cwd=os.getcwd(), env=env)


def test_a_bench_killed_as_its_sampler_starts_leaves_no_sampler_behind(tmp_path: Path) -> None:
    # The bench dies right after starting the sampler, before the sampler's interpreter has
    # looked up its parent: that parent is init (or a subreaper) by then.
    script = ("import os, subprocess\nfrom droplet.cli.bench_speed import SpeedLog\n"
              "real = subprocess.Popen\n"
              "def popen(*args, **kwargs):\n"
              "    started = real(*args, **kwargs)\n"
              "    print(started.pid, flush=True)\n"
              "    os._exit(0)\n"
              "subprocess.Popen = popen\n"
              "SpeedLog(every_s=0.05).start()\n")
    sampler = int(_run(script, tmp_path).stdout.split()[0])
    try:
        assert _waitexited(sampler), "the sampler outlived the bench that started it"
        assert not list(tmp_path.glob("droplet-bench-speed-*")), "its file was left behind"
    finally:
        if not exited(sampler):
            os.kill(sampler, signal.SIGKILL)


def test_a_killed_bench_leaves_no_sample_file_behind(tmp_path: Path) -> None:
    script = ("import os\nfrom droplet.cli.bench_speed import SpeedLog\n"
              "log = SpeedLog(every_s=0.05)\nlog.start()\nprint(log._sampler.pid, flush=True)\n"
              "os._exit(0)\n")
    sampler = int(_run(script, tmp_path).stdout.split()[0])
    assert _waitexited(sampler)
    assert not list(tmp_path.glob("droplet-bench-speed-*"))


def test_ctrl_c_ends_the_bench_without_a_traceback_from_the_sampler(tmp_path: Path) -> None:
    # Ctrl-C on a terminal reaches every process of the foreground group, the sampler too.
    script = ("import os, signal, sys, time\nfrom droplet.cli.bench_speed import SpeedLog\n"
              "log = SpeedLog(every_s=0.05)\nlog.start()\nlog.mark('droplet')\n"
              "try:\n"
              "    os.killpg(0, signal.SIGINT)\n"
              "    time.sleep(5)\n"
              "except KeyboardInterrupt:\n"
              "    time.sleep(0.5)\n"  # (time for the sampler to have printed anything)
              "    print(log._sampler.poll(), flush=True)\n"
              "finally:\n"
              "    log.stop()\n")
    env = dict(os.environ, TMPDIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30, cwd=os.getcwd(), env=env, start_new_session=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.split() == ["None"]  # the sampler ran on until stop() ended it
    assert not list(tmp_path.glob("droplet-bench-speed-*"))


def test_the_sampler_runs_whatever_droplet_the_bench_s_directory_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `droplet bench` run from another checkout, or any directory with a droplet/ in it: the
    # bench imported its own Droplet, `python -m droplet...` in that directory found that one.
    (tmp_path / "droplet").mkdir()
    (tmp_path / "droplet" / "__init__.py").write_text("raise ImportError('another droplet')\n")
    monkeypatch.chdir(tmp_path)
    log = SpeedLog(every_s=0.05)
    log.start()
    log.mark("droplet")
    time.sleep(0.6)
    log.stop()
    assert len(log.phases["droplet"]) >= 3
    assert log.note() is None


@pytest.mark.parametrize("interpreter", ["/bin/false", "/nonexistent/python"])
def test_a_sampler_that_does_not_run_is_said_so(
        interpreter: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Not a crash of the bench (it measures without the sampler), not a silent drift of 1.0.
    monkeypatch.setattr(sys, "executable", interpreter)
    log = SpeedLog(every_s=0.05)
    log.start()
    log.mark("droplet")
    log.stop()
    note = log.note()
    assert note is not None, "no samples, no note: it read as a steady machine"
    assert note.startswith("the machine's speed was not sampled through the run"), note
