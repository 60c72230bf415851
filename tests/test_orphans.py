"""Issue 22 #6: a killed build's runs are found by pid *and* process start time, never by a bare pid.

In a container a build gets the same pid on every start, so the pid recorded by a killed build is alive
again (often it is this very process): only the start time tells the two processes apart.
"""

import os
import socket
import subprocess
import uuid

import dagster as dg
import psutil
from dagster._core.storage.dagster_run import DagsterRun

from gistforge.orphans import HOST_TAG, PID_TAG, START_TAG, recover_orphaned_runs, run_tags, running


def _started_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> str:
    run = DagsterRun(job_name="build_and_publish", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED,
                     tags=tags)
    instance.add_run(run)
    return run.run_id


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def test_run_tags_record_pid_and_start_time():
    tags = run_tags()
    assert tags[HOST_TAG] == socket.gethostname() and tags[PID_TAG] == str(os.getpid())
    assert abs(float(tags[START_TAG]) - psutil.Process().create_time()) < 0.01
    assert running(tags), "this process, as it tagged itself"


def test_a_reused_pid_does_not_hide_an_orphan():
    with dg.instance_for_test() as instance:
        me = run_tags()
        # a killed build in an earlier container start: same host, same pid (ours), an earlier start time
        reused_self = _started_run(instance, {**me, START_TAG: f"{float(me[START_TAG]) - 3600:.3f}"})
        # a killed build whose pid now belongs to another live process (here: our parent), started another time
        parent = psutil.Process().ppid()
        reused_other = _started_run(instance, {HOST_TAG: me[HOST_TAG], PID_TAG: str(parent),
                                               START_TAG: f"{psutil.Process(parent).create_time() + 5:.3f}"})
        # a build that still runs: a live process with its own start time
        live = subprocess.Popen(["sleep", "60"])
        try:
            alive = _started_run(instance, {HOST_TAG: me[HOST_TAG], PID_TAG: str(live.pid),
                                            START_TAG: f"{psutil.Process(live.pid).create_time():.3f}"})
            gone = _started_run(instance, {HOST_TAG: me[HOST_TAG], PID_TAG: "999999999", START_TAG: "1.000"})
            elsewhere = _started_run(instance, {HOST_TAG: "another-host", PID_TAG: "999999999", START_TAG: "1.000"})
            # this very process (a run it started itself is live, as before)
            current = _started_run(instance, me)

            closed = set(recover_orphaned_runs(instance))

            assert closed == {reused_self, reused_other, gone}
            for run_id in closed:
                assert _status(instance, run_id) == dg.DagsterRunStatus.FAILURE
            for run_id in (alive, elsewhere, current):
                assert _status(instance, run_id) == dg.DagsterRunStatus.STARTED
        finally:
            live.kill()
            live.wait()


def test_a_run_tagged_without_start_time_on_this_pid_is_an_orphan():
    """Runs tagged by an older gistforge have no start time: a live pid other than ours still counts as live,
    ours cannot be (this process tags its runs with a start time), so it no longer skips that orphan forever."""
    with dg.instance_for_test() as instance:
        host = socket.gethostname()
        legacy_self = _started_run(instance, {HOST_TAG: host, PID_TAG: str(os.getpid())})
        legacy_other = _started_run(instance, {HOST_TAG: host, PID_TAG: str(psutil.Process().ppid())})
        assert recover_orphaned_runs(instance) == [legacy_self]
        assert _status(instance, legacy_other) == dg.DagsterRunStatus.STARTED
