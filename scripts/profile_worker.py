"""Runs `droplet worker` with a call counter on every thread, switched by signals:
SIGUSR1 starts counting afresh, SIGHUP writes the counts to $DROPLET_PROFILE_OUT (json).
Counting calls (not timing them) gives figures that do not move with the machine's load."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections import Counter
from types import FrameType
from typing import Any

counts: Counter[tuple[str, str, str]] = Counter()
on = False


def _profile(frame: FrameType, event: str, arg: Any) -> None:
    if not on:
        return
    if event == "call":
        code = frame.f_code
        detail = ""
        if code.co_filename == "<string>" and "self" in frame.f_locals:
            detail = type(frame.f_locals["self"]).__qualname__
        elif code.co_name == "helper" and "func" in frame.f_locals:
            detail = getattr(frame.f_locals["func"], "__qualname__", "")
        elif code.co_name in ("debug", "isEnabledFor", "__enter__", "__exit__", "items", "__instancecheck__", "observe", "inc", "set", "notify_all", "is_set", "RLock") and frame.f_back:
            detail = frame.f_back.f_code.co_filename.split("/")[-1]
        counts[("py", code.co_filename, f"{code.co_name}:{code.co_firstlineno}{detail}")] += 1
    elif event == "c_call":
        counts[("c", getattr(arg, "__module__", None) or "", getattr(arg, "__qualname__", str(arg)))] += 1


def _start(*_: object) -> None:
    global on
    counts.clear()
    on = True


def _dump(*_: object) -> None:
    global on
    on = False
    rows = [[k[0], k[1], k[2], n] for k, n in counts.items()]
    with open(os.environ["DROPLET_PROFILE_OUT"], "w") as out:
        json.dump(rows, out)


def main() -> int:
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGHUP, _dump)
    threading.setprofile(_profile)
    sys.setprofile(_profile)
    from droplet.cli.main import main as droplet_main

    return droplet_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
