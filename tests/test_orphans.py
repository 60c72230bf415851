"""One build per home at a time (`build_lock`), and the runs a killed build left behind, closed by the next.

A build that holds its home's lock knows that no other build of that home runs, so every unfinished run
tagged with the home is an orphan: no process id or start time is compared (in a container a build gets the
same pid on every start, which fooled that rule once). The home is known by an id it keeps, not its path.
"""

import shutil
import subprocess
import sys
import uuid

import dagster as dg

from gistforge.orphans import HOME_TAG, build_lock, home_id, recover_orphaned_runs, run_tags
from pipeline.common import locks


def _started_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> str:
    run = dg.DagsterRun(job_name="build_and_publish", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED,
                        tags=tags)
    instance.add_run(run)
    return run.run_id


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def test_the_lock_holder_closes_its_homes_unfinished_runs_and_frees_their_slots(tmp_path):
    home, other = tmp_path / "home", tmp_path / "other"
    with dg.instance_for_test() as instance:
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default("guide_model")
        orphan = _started_run(instance, run_tags(home))
        storage.claim_concurrency_slot("guide_model", orphan, "mined_triplets")
        elsewhere = _started_run(instance, run_tags(other))  # another home's build: its own lock, its own runs
        from_ui = _started_run(instance, {})  # the UI's or the daemon's: not the CLI's to close
        with build_lock(home, print):
            assert recover_orphaned_runs(instance, home) == [orphan]
        assert _status(instance, orphan) == dg.DagsterRunStatus.FAILURE
        assert [_status(instance, r) for r in (elsewhere, from_ui)] == [dg.DagsterRunStatus.STARTED] * 2
        assert not storage.get_concurrency_info("guide_model").claimed_slots, "the orphan's slot is free again"
    assert run_tags(home)[HOME_TAG] == (home / ".home-id").read_text().strip()


def test_another_machines_home_at_the_same_path_is_another_home(tmp_path):
    """Two containers, each with its own disk but the same home path, recording in one Dagster instance (the
    Postgres deployment): neither closes the other's live runs, since each home has its own id."""
    home = tmp_path / "home"
    with dg.instance_for_test() as instance:
        theirs = _started_run(instance, run_tags(home))  # the other machine's home, at this path
        shutil.rmtree(home)  # this machine's disk: the same path, a home of its own
        with build_lock(home, print):
            assert recover_orphaned_runs(instance, home) == []
        assert _status(instance, theirs) == dg.DagsterRunStatus.STARTED
        assert home_id(home) == home_id(home), "a home keeps its id"


def test_a_second_build_on_a_home_waits_saying_who_holds_it_then_goes_on(tmp_path):
    """The waiting build names the holder (pid, host, since when) once, and takes the lock when it is dropped."""
    home = tmp_path / "home"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from gistforge.orphans import build_lock\n"
         f"with build_lock({str(home)!r}, print):\n    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        said = []

        def say(message: str) -> None:
            said.append(message)
            holder.stdin.close()  # the holder ends; the kernel drops its lock

        with build_lock(home, say):
            assert len(said) == 1 and f"held by pid {holder.pid} on " in said[0] and "Ctrl-C to stop" in said[0]
            assert str(home) in said[0]
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_is_free_at_once_when_nobody_holds_it(tmp_path):
    said = []
    with locks.exclusive(tmp_path / ".lock", "x", said.append):
        pass
    with locks.exclusive(tmp_path / ".lock", "x", said.append):
        pass
    assert said == []
