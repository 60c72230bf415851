"""Named points where a test can kill or pause the build process for real.

`GISTFORGE_KILL_AT=<point>` kills the process (SIGKILL: no cleanup, no `finally`) the first time it reaches
that point; `GISTFORGE_PAUSE_AT=<point>` makes it wait there (up to 10 minutes), logging that it does, so a
test can send a signal while a step is busy. The points sit mid-stage, after some work and before its
output is committed, so the kill tests prove that a rerun finishes the job without redoing what was
committed and that nothing half-written ever becomes visible. Unset (always, outside tests) a point costs
two environment lookups.
"""

from __future__ import annotations

import logging
import os
import signal
import time

POINTS = ("ingest", "embed", "mine", "write", "publish")
log = logging.getLogger(__name__)


def point(name: str) -> None:
    if os.environ.get("GISTFORGE_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("GISTFORGE_PAUSE_AT") == name:
        log.warning("paused at fault point %r (GISTFORGE_PAUSE_AT)", name)
        time.sleep(600)
