"""Named points where a test can kill the build process for real (SIGKILL, no cleanup, no `finally`).

`GISTFORGE_KILL_AT=<point>` kills the process the first time it reaches that point. The points sit
mid-stage, after some work and before its output is committed, so the kill tests prove that a rerun
finishes the job without redoing what was committed and that nothing half-written ever becomes visible.
Unset (always, outside tests) a point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = ("ingest", "embed", "mine", "write", "publish")


def point(name: str) -> None:
    if os.environ.get("GISTFORGE_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
