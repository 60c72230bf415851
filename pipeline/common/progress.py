"""Progress of a long loop: a tqdm bar where a terminal shows one, and a log line every few seconds.

The log lines are what reaches Dagster's run log (the `pipeline` logger is managed by the instance) and a
CI log, where a bar cannot be seen; a loop shorter than `every_s` logs nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Callable


class Progress:
    def __init__(self, total: int, desc: str, unit: str, log: logging.Logger, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        from tqdm.auto import tqdm

        self.total, self.desc, self.unit, self.log, self.every_s, self.clock = total, desc, unit, log, every_s, clock
        self.done = 0
        self.start = self.last = clock()
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=None)  # None: no bar when not a terminal

    def update(self, n: int) -> None:
        self.bar.update(n)
        self.done += n
        now = self.clock()
        if now - self.last >= self.every_s and self.done < self.total:
            self.last = now
            elapsed = now - self.start
            eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
            self.log.info("%s: %s/%s %s (%.0f%%) in %.0f s, about %.0f s left", self.desc, self.done, self.total,
                          self.unit, 100 * self.done / max(self.total, 1), elapsed, eta)

    def close(self) -> None:
        self.bar.close()
