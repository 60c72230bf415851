"""One build per home at a time, and the runs a killed build left behind, closed so the next is not blocked.

`gistforge build` holds its home's lock (`build_lock`: an OS lock, dropped by the kernel when the holder dies)
for as long as it runs, and tags each of its runs with the home's id (`home_id`: a random id kept in the home,
so two machines' homes at the same path, recording in one shared Dagster instance, are never taken for one). A
second build on the same home waits, saying which build holds it. So a build that holds the lock knows that any
unfinished run tagged with its home was left by a build that was killed: no process ids to compare.

Why this is needed (Dagster's limitation): a process killed mid-step never reports its run's end, so the run stays
STARTED and keeps its `guide_model` / `hub_publish` pool slot. Dagster frees slots only of runs that finished,
and its run monitoring, which would mark such a run failed, needs the daemon and a launcher that watches
workers; `gistforge build` runs its jobs in-process, with neither.
"""

from __future__ import annotations

import logging
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import dagster as dg

from pipeline.common import locks

log = logging.getLogger(__name__)

HOME_TAG = "gistforge/home"  # the home's id
HOME_PATH_TAG = "gistforge/home_path"  # where it was, for people reading the run in the UI

# from the public enum, so new states count as unfinished unless they are an end (MANAGED: run elsewhere)
_ENDS = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED,
         dg.DagsterRunStatus.MANAGED}
UNFINISHED = [s for s in dg.DagsterRunStatus if s not in _ENDS]


def home_id(home: Path) -> str:
    """The home's id, made once (`<home>/.home-id`, linked into place so that racing builds agree on one)."""
    path = Path(home) / ".home-id"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".home-id.{os.getpid()}.{uuid.uuid4().hex}")
        tmp.write_text(uuid.uuid4().hex + "\n")
        try:
            os.link(tmp, path)  # fails if another build made it first: then its id is the home's
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def run_tags(home: Path) -> dict[str, str]:
    """The tags that say which home's build ran a run."""
    return {HOME_TAG: home_id(home), HOME_PATH_TAG: str(Path(home).resolve())}


@contextmanager
def build_lock(home: Path, say: Callable[[str], None]) -> Iterator[None]:
    """Hold the home's build lock while a build runs; a build already running there is waited for, visibly."""
    with locks.exclusive(Path(home) / ".build.lock", f"the home {home} (another gistforge build runs on it)", say):
        yield


def recover_orphaned_runs(instance: dg.DagsterInstance, home: Path) -> list[str]:
    """Mark the unfinished runs of `home`'s earlier builds as failed, and free every slot a finished run holds.

    Call it holding `build_lock(home)`: then no other build of the home runs, so every such run is an orphan.
    Runs of other homes, and of the UI or the daemon (not tagged), are left alone. Returns the run ids closed.
    """
    closed: list[str] = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED, tags={HOME_TAG: home_id(home)})):
        instance.report_run_failed(run, message="gistforge: the build that ran this run was killed (its home's "
                                                "build lock is free again); marked failed so its pool slots are freed")
        closed.append(run.run_id)
    if instance.event_log_storage.supports_global_concurrency_limits:
        # slots of the runs closed now, and of any finished run that still holds one (a kill between steps)
        holders = instance.event_log_storage.get_concurrency_run_ids()
        finished = {r.run_id for r in instance.get_runs(filters=dg.RunsFilter(run_ids=list(holders)))
                    if r.is_finished} if holders else set()
        for run_id in sorted(finished):
            freed = instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            log.info("freed pool slots %s of run %s", freed, run_id)
    for run_id in closed:
        log.warning("closed run %s: its build process was killed; this build redoes what it left unfinished", run_id)
    return closed
