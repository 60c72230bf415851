"""Remember every SIGINT/SIGTERM a build receives, including those Dagster's handler swallows.

While a run executes in-process, Dagster replaces the signal handlers: inside a step an interrupt raises,
but one that lands between a run's last step and its end is only flagged, and the flag is cleared when
the run returns, so the build would go on to its next run. Python's wakeup fd records every signal at
the C level whatever handler is installed; the CLI reads it after each run.
"""

from __future__ import annotations

import signal
import socket
from types import TracebackType


class SignalLatch:
    """`with SignalLatch() as latch: ... latch.received()` - True once SIGINT or SIGTERM arrived."""

    def __enter__(self) -> "SignalLatch":
        self._read, self._write = socket.socketpair()
        for sock in (self._read, self._write):
            sock.setblocking(False)
        self._previous = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        self._seen = False
        return self

    def received(self) -> bool:
        try:
            while data := self._read.recv(4096):
                self._seen |= any(b in (signal.SIGINT, signal.SIGTERM) for b in data)
        except BlockingIOError:
            pass
        return self._seen

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        signal.set_wakeup_fd(self._previous)
        self._read.close()
        self._write.close()
