"""The one wait loop the tests share: poll until something is there, failing with what was awaited (and the
watched process's last words) when time runs out or that process ends first."""

from __future__ import annotations

import subprocess
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def until(what: str, found: Callable[[], T], timeout_s: float = 300, every_s: float = 0.2,
          proc: subprocess.Popen | None = None, log: Callable[[], str] = lambda: "") -> T:
    """`found()`'s first truthy value. Fails if `timeout_s` passes, or if `proc` (the process expected to make
    it happen) exits first; `log()` is added to the failure, e.g. the tail of that process's log file."""
    deadline = time.monotonic() + timeout_s
    while not (value := found()):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process {proc.pid} exited ({proc.returncode}) before {what}: {log()}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"no {what} after {timeout_s:g} s: {log()}")
        time.sleep(every_s)
    return value
