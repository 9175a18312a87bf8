"""The floor's and the peers' scripts of `droplet bench`: which run (`--floor`, `--peers`),
how each is called, and run so that stopping one stops what it started.

Why: a peer's script starts its own worker (celery_bench.py a Celery worker, dramatiq_bench.py a
Dramatiq worker in a session of its own) and stops it in a `finally`. `subprocess.run` ends a
script it gives up on (the bench's SIGTERM or Ctrl-C, the script's time limit) with SIGKILL at
once: no `finally` ran, and the peer's worker was left running for ever, adopted by init and
consuming from the shared broker. A script here runs in a process group of its own; to stop it,
the group gets SIGINT, as from a terminal's Ctrl-C, and some seconds to clean up, then SIGKILL.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from droplet.cli.bench_measure import BenchError

STOP_GRACE_S = 20.0  # celery_bench.py gives its worker 10 s to stop after a terminate


def run_script(argv: Sequence[str], env: Mapping[str, str], cwd: str,
               timeout_s: float) -> subprocess.CompletedProcess[str]:
    """As `subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)`, except
    that a script interrupted or out of time is stopped with its group (see above)."""
    process = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, preexec_fn=_interruptible)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except BaseException:  # (TimeoutExpired, KeyboardInterrupt: the bench's SIGTERM too)
        stop(process)
        raise
    return subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)


def stop(process: subprocess.Popen[str], grace_s: float = STOP_GRACE_S) -> None:
    """SIGINT to the script's group, `grace_s` for it to exit, then SIGKILL to whatever of the
    group is left (always, even if a second Ctrl-C cuts the wait short)."""
    try:
        _signal_group(process.pid, signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=grace_s)
    finally:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()


def _interruptible() -> None:
    """In the script, before it starts: SIGINT as a terminal's Ctrl-C (a KeyboardInterrupt in
    Python), even under a bench started in the background or by nohup, which ignores SIGINT
    and would pass that on: the script would sit out the grace and its worker outlive it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(pgid, signum)


# Scripts `--peers DIR` runs when present (none of them is a dependency of Droplet): the
# raw-pika floor and the peer systems, measured the way droplet bench measures.
PEER_SCRIPTS = {"floor": "pika_floor.py", "celery": "celery_bench.py",
                "dramatiq": "dramatiq_bench.py"}


def script_figures(path: str, broker_url: str, python: str = sys.executable,
                   args: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON object a floor's or peer's script prints as its last line."""
    env = dict(os.environ, BENCH_BROKER=broker_url)
    script = Path(path).absolute()  # it runs in its folder: `--peers dir` would be dir/dir/...
    done = run_script([python, str(script), *args], env, str(script.parent), timeout_s=900)
    lines = done.stdout.strip().splitlines() if done.returncode == 0 else []
    with suppress(json.JSONDecodeError, IndexError):
        floor = json.loads(lines[-1])
        if isinstance(floor, dict):
            return floor
    raise BenchError(f"floor script {path} (exit {done.returncode}) printed no JSON object "
                     f"as its last line: {(done.stderr or done.stdout)[-500:]}")


def find_scripts(args: argparse.Namespace, notes: list[str]) -> dict[str, Path]:
    """The scripts to compare with, by phase name, in the order a round runs them: the floor
    (`--floor PATH` over the one in `--peers DIR`), then each peer `--peers DIR` has."""
    found: dict[str, Path] = {}
    if args.floor:
        found["floor"] = Path(args.floor)
    if args.peers:
        folder = Path(args.peers)
        if not folder.is_dir():
            raise BenchError(f"--peers {folder}: no such folder")
        for name, script in PEER_SCRIPTS.items():
            if (folder / script).exists():
                found.setdefault(name, folder / script)
            elif name not in found:  # (not "floor skipped" under a `--floor PATH` that runs)
                notes.append(f"{script} not in {folder}: {name} skipped")
    return found


def run_phase(name: str, path: Path, broker_url: str, python: str | None,
              notes: list[str], counts: dict[str, int], required: bool = False
              ) -> dict[str, Any] | None:
    """One round's figures of the floor or a peer; None (and a note) when its script fails,
    so the other phases still count. A `required` one (`--floor PATH`, named on purpose)
    ends the bench instead. A peer is given the bench's counts (`--n CALLS --burst BURST`):
    a p99 compares with a p99 over as many calls."""
    args = [] if name == "floor" else ["--n", str(counts["calls"]),
                                       "--burst", str(counts["burst"])]
    try:
        figures = script_figures(str(path), broker_url, python or sys.executable, args)
    except (BenchError, subprocess.TimeoutExpired) as exc:
        if required:
            raise BenchError(str(exc)) from None
        notes.append(f"{name} could not be measured: {exc}")
        return None
    return figures
