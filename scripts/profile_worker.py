"""Runs `droplet worker` with a call counter on every thread, switched by signals: SIGUSR1
starts counting afresh, SIGHUP writes the counts to $DROPLET_PROFILE_OUT (json). Counting
calls (not timing them) gives figures that do not move with the machine's load; the worker
itself uses SIGUSR2 (cancels), so that one is left alone. scripts/profile_calls.py drives it."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections import Counter
from types import FrameType
from typing import Any

# Calls whose caller (or, for a dataclass __init__ / contextmanager, whose class or
# generator) is worth naming: they are called from many places.
_BY_CALLER = frozenset({"debug", "isEnabledFor", "__enter__", "__exit__", "items", "inc",
                        "__instancecheck__", "observe", "set", "notify_all", "is_set", "RLock"})


class CallCounter:
    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.on = False

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if not self.on:
            return
        if event == "call":
            code = frame.f_code
            self.counts[("py", code.co_filename, f"{code.co_name}:{code.co_firstlineno}"
                         f"{_detail(frame)}")] += 1
        elif event == "c_call":
            module = getattr(arg, "__module__", None) or ""
            self.counts[("c", module, getattr(arg, "__qualname__", str(arg)))] += 1

    def install(self) -> None:
        threading.setprofile(self)
        sys.setprofile(self)

    def rows(self) -> list[list[Any]]:
        return [[kind, where, name, n] for (kind, where, name), n in self.counts.items()]


def _detail(frame: FrameType) -> str:
    code = frame.f_code
    if code.co_filename == "<string>" and "self" in frame.f_locals:  # a dataclass __init__
        return type(frame.f_locals["self"]).__qualname__
    if code.co_name == "helper" and "func" in frame.f_locals:  # a contextmanager
        return str(getattr(frame.f_locals["func"], "__qualname__", ""))
    if code.co_name in _BY_CALLER and frame.f_back is not None:
        return frame.f_back.f_code.co_filename.split("/")[-1]
    return ""


def main() -> int:
    counter = CallCounter()

    def start(*_: object) -> None:
        counter.counts.clear()
        counter.on = True

    def dump(*_: object) -> None:
        counter.on = False
        with open(os.environ["DROPLET_PROFILE_OUT"], "w") as out:
            json.dump(counter.rows(), out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGHUP, dump)
    counter.install()
    from droplet.cli.main import main as droplet_main

    return droplet_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
