"""The work directory: its layout and an exclusive lock (I/O).

Two runs on one workdir at once would interleave their manifest and catalog updates, so
every flow holds ``WORKDIR/.lock`` (an advisory ``flock``) while it writes. The lock is
re-entrant within a process, so the parent flow and its subflows share it; another process
gets :class:`WorkdirBusyError` at once instead of waiting.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path

LOCK_NAME = ".lock"

_held: dict[str, tuple[int, int]] = {}  # resolved workdir -> (fd, depth), this process
_guard = threading.Lock()


class WorkdirBusyError(RuntimeError):
    """Another process is writing to the same workdir."""


@contextlib.contextmanager
def locked(workdir: str | os.PathLike):
    """Hold the workdir's lock for the duration of the block (created if missing)."""
    root = Path(workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    key = str(root)
    with _guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
        else:
            fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise WorkdirBusyError(f"{root}: another seti-auditor run (pid {holder}) is using this workdir") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            _held[key] = (fd, 1)
    try:
        yield root
    finally:
        with _guard:
            fd, depth = _held[key]
            if depth == 1:
                del _held[key]
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            else:
                _held[key] = (fd, depth - 1)
