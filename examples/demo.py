"""`make demo`: start a local cluster, run the examples against it, stop the cluster."""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    cluster = subprocess.Popen(
        [sys.executable, "-m", "droplet.cli.main", "--log-level", "WARNING", "up", "--workers",
         "2"],
        stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
    )
    try:
        assert cluster.stdout is not None
        deadline = time.monotonic() + 90
        for line in cluster.stdout:
            print(line, end="", flush=True)
            if "ready" in line:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the cluster did not start")
        else:
            raise SystemExit("droplet up exited before it was ready (its error is above)")
        runpy.run_path(str(HERE / "quickstart.py"), run_name="__main__")
        print()
        runpy.run_path(str(HERE / "stateful.py"), run_name="__main__")
        return 0
    finally:
        cluster.send_signal(signal.SIGINT)
        try:
            out, _ = cluster.communicate(timeout=30)
            print(out, end="")
        except subprocess.TimeoutExpired:
            cluster.kill()


if __name__ == "__main__":
    sys.exit(main())
