"""Runs left behind by a killed `gistforge build`, found and closed so the next build is not blocked.

The CLI runs steps in its own process. A process killed mid-step never reports its run's end, so the run
stays STARTED and keeps its `guide_model` / `hub_publish` pool slot: the next build would wait for that slot
forever. Dagster's daemon frees slots only for runs that have *finished*, and the default run launcher cannot
tell that a worker died, so the CLI tags its runs with host, pid and the process's start time and, on start,
marks the runs whose process is gone as failed and frees their slots. A bare pid proves nothing: in a container
a build gets the same pid on every start, so a run counts as live only while a process with its pid *and* its
start time exists.
"""

from __future__ import annotations

import logging
import os
import socket

import dagster as dg

from pipeline.common.pids import started_at

log = logging.getLogger(__name__)

HOST_TAG = "gistforge/host"
PID_TAG = "gistforge/pid"
START_TAG = "gistforge/pid_start"  # the process's start time (seconds since the epoch, psutil.Process.create_time)
_SAME_START_S = 0.05  # start times are kernel clock ticks (10 ms) after boot: one process always reads the same


# from the public enum, so new states count as unfinished unless they are an end (MANAGED: run elsewhere)
_ENDS = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED,
         dg.DagsterRunStatus.MANAGED}
UNFINISHED = [s for s in dg.DagsterRunStatus if s not in _ENDS]


def run_tags() -> dict[str, str]:
    """Tags that let a later build tell whether the process running a run is still alive."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), START_TAG: f"{started_at(os.getpid()):.3f}"}


def running(tags) -> bool:
    """Whether the process that tagged a run (`run_tags`) still runs: its pid exists with the same start time.

    A run without a start tag (tagged by an older gistforge) is live while its pid exists and is not this
    process: this process tags its own runs with a start time."""
    pid = int(tags.get(PID_TAG, "0"))
    if pid <= 0:
        return False
    start = started_at(pid)
    if start is None:
        return False
    recorded = tags.get(START_TAG)
    if recorded is None:
        return pid != os.getpid()
    if start != start:  # NaN: someone else's process; its start time cannot be compared
        return True
    return abs(start - float(recorded)) < _SAME_START_S


def recover_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark this host's unfinished CLI runs whose process is gone as failed, and free every slot they hold.

    Returns the run ids it closed. Runs from other hosts, from the UI or daemon (no pid tag), and runs
    whose process still runs (same pid, same start time) are left alone.
    """
    host = socket.gethostname()
    closed: list[str] = []
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED, tags={HOST_TAG: host}))
    for run in runs:
        pid = int(run.tags.get(PID_TAG, "0"))
        if pid <= 0 or running(run.tags):
            continue
        instance.report_run_failed(run, message=f"gistforge: the build process (pid {pid} on {host}) that ran "
                                                f"this run is gone; marked failed so its pool slots are freed")
        closed.append(run.run_id)
    if instance.event_log_storage.supports_global_concurrency_limits:
        # slots of runs closed now, and of any finished run that still holds one (a kill between steps)
        holders = instance.event_log_storage.get_concurrency_run_ids()
        finished = {r.run_id for r in instance.get_runs(filters=dg.RunsFilter(run_ids=list(holders)))
                    if r.is_finished} if holders else set()
        for run_id in sorted(finished | (set(closed) & holders)):
            freed = instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            log.info("freed pool slots %s of run %s", freed, run_id)
    for run_id in closed:
        log.warning("closed run %s: its build process was killed; this build redoes what it left unfinished", run_id)
    return closed
