"""OS-level exclusive locks (`flock`): what serialises work on one home across processes, Dagster instances
and (where the file system supports it, as NFSv4 and most PVCs do) hosts. The kernel drops a lock whose
holder dies, so a killed build never leaves one behind."""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)


@contextmanager
def exclusive(path: Path, what: str, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing), waiting while another process holds it.

    A wait is said once (`say`, else the log), naming the holder as it noted itself in the file (host, pid,
    since when: for people only; the lock itself is the kernel's). Ctrl-C or SIGTERM end the wait: the blocked
    `flock` returns to Python, whose handler raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            (say or log.info)(f"waiting for {what} to be free: held by {holder or 'another process'} "
                              f"(lock {path.name}; Ctrl-C to stop)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        _note(fd)
        yield
    finally:
        os.close(fd)


def _note(fd: int) -> None:
    note = (f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}\n").encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, note, 0)
    except OSError:  # a read-only or full disk: the lock holds all the same
        pass


def _holder(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip().splitlines()[0][:200]
    except (OSError, IndexError):
        return ""
