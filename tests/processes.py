"""Whether a process the tests watch has ended, read from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path


def exited(pid: int) -> bool:
    """Gone, or a zombie: it has exited and only its parent's wait is missing (a process
    adopted by init when its parent died is reaped some time later)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"
