"""The floor's and the peers' scripts of `droplet bench`, run so that stopping one stops what it
started.

Why: a peer's script starts its own worker (celery_bench.py a Celery worker, dramatiq_bench.py a
Dramatiq worker in a session of its own) and stops it in a `finally`. `subprocess.run` ends a
script it gives up on (the bench's SIGTERM or Ctrl-C, the script's time limit) with SIGKILL at
once: no `finally` ran, and the peer's worker was left running for ever, adopted by init and
consuming from the shared broker. A script here runs in a process group of its own; to stop it,
the group gets SIGINT, as from a terminal's Ctrl-C, and some seconds to clean up, then SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import suppress

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
