"""The files of byte-range locks that the workers of one user on one host share (run slots,
seats at the shared queue): opened only when they are this user's own.

A file another user planted (or a link to one), or one that others may open, would let
them hold every lock in it: no worker would then run, or consume the shared queue.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat

log = logging.getLogger(__name__)


def open_own(directory: str, name: str, what: str) -> int:
    """The file's descriptor (created 0600 if missing), or -1 (the log says why, after
    `what`: what that turns off)."""
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        log.warning("%s: cannot open %s (%s)", what, path, exc)
        return -1
    info = os.fstat(fd)
    if info.st_uid != os.getuid() or not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
        os.close(fd)
        log.warning("%s: %s is not this user's own file, or others may open it", what, path)
        return -1
    return fd


def try_lock(fd: int, offset: int, shared: bool = False) -> bool:
    """Locks one byte without waiting: True once held by this process."""
    try:
        fcntl.lockf(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB, 1, offset)
    except OSError:
        return False
    return True


def unlock(fd: int, offset: int) -> None:
    """Unlocks one byte (a closed file, fd -1: nothing to do; a failure is only logged)."""
    if fd >= 0:
        try:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
        except OSError as exc:
            log.debug("unlocking byte %d of a lock file failed: %s", offset, exc)
