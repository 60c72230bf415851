"""Whether a process still exists on this host, and whether it is the one that wrote something.

A bare pid proves little: pids are reused (a container's build is often pid 1 or the same small number at
every start), so a writer is identified by pid *and* start time: a live process that started after a
temporary was made cannot be the process that made it.
"""

from __future__ import annotations

import os
import re
import socket

import psutil


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def started_at(pid: int) -> float | None:
    """The process's start time (seconds since the epoch), or None when no such process lives here."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # exists, owned by someone else, start time unreadable: NaN
        return float("nan")


def alive_since(pid: int, since: float) -> bool:
    """A process with this pid lives here and started no later than `since` (with 2 s of clock slack); one
    whose start time cannot be read counts as alive."""
    start = started_at(pid)
    return start is not None and (start != start or start <= since + 2.0)


def host_id() -> str:
    """This host's name as a file-name-safe token (no dots): what tells hosts apart on a shared folder."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
