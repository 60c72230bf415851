"""A build killed at any stage resumes on rerun, and a waiting build stops cleanly.

(The token leak check runs where the token is read: the Hub target, in test_publishing.py.)
"""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from pipeline.common.faults import POINTS
from pipeline.road.mine import MineReport
from pipeline.workspace import Workspace
from tests.conftest import wait_for_text

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _env(home: Path, dagster_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GISTFORGE_")}
    env.update({"GISTFORGE_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
                "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


def _claimed_slots(dagster_home: Path) -> list[tuple[str, str]]:
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        storage = instance.event_log_storage
        return [(s.run_id, s.step_key) for key in storage.get_concurrency_keys()
                for s in storage.get_concurrency_info(key).claimed_slots]


def _assert_nothing_half_written(home: Path) -> None:
    assert not (home / "hub").exists() or not list((home / "hub").rglob("refs/2*")), "nothing published yet"
    visible = [p for p in home.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(home).parts)]
    for p in visible:  # every visible file is complete: parquet files parse, json files load
        if p.suffix == ".parquet":
            pl.read_parquet(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())


def test_build_killed_at_every_stage_resumes(tmp_path):
    """SIGKILL mid-ingest, mid-embed, mid-mine, mid-write and mid-publish, one run each, then a clean rerun."""
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    cmd = [sys.executable, "-m", "gistforge.cli", "build"]
    work = home / "work" / "embedded"
    split, triplets = work / "splits" / "Banking77Classification.parquet", work / "triplets" / "Banking77Classification.parquet"
    stamps = {}
    for point in POINTS:
        killed = subprocess.run(cmd, cwd=ROOT, env={**_env(home, dagster_home), "GISTFORGE_KILL_AT": point},
                                capture_output=True, text=True, timeout=600)
        assert killed.returncode == -signal.SIGKILL, f"not killed at {point}: {killed.stderr[-3000:]}"
        _assert_nothing_half_written(home)
        for path in (split, triplets):  # when each was first committed
            if path.exists() and path not in stamps:
                stamps[path] = path.stat().st_mtime_ns
    done = subprocess.run(cmd, cwd=ROOT, env=_env(home, dagster_home), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gistforge: published local/gistforge-medi-mteb-triplets@" in done.stdout
    # finished work was not redone: the split (committed before the embed kill) and the triplets (committed
    # after the mine kill) kept their files, and the texts embedded before the kill were not encoded again
    assert {p: p.stat().st_mtime_ns for p in (split, triplets)} == stamps
    ws = Workspace(home, "embedded")
    assert ws.load_report(triplets, MineReport).encode.encoded == 0
    # every killed run was closed and its pool slot freed, else a rerun would have waited for it forever
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        statuses = [r.status for r in instance.get_runs()]
    assert statuses.count(dg.DagsterRunStatus.FAILURE) >= len(POINTS) and dg.DagsterRunStatus.STARTED not in statuses
    assert not _claimed_slots(dagster_home)
    # and the temporaries the killed runs were writing were swept by the rerun's writes
    assert not [p for p in home.rglob(".*") if re.fullmatch(r"\..+\.\d+\..+", p.name)]


def test_a_build_waiting_for_a_busy_pool_says_so_stops_on_sigterm_and_goes_on_when_freed(tmp_path):
    """Dagster's in-process wait for a slot ignores SIGTERM; the CLI waits first, visibly and interruptibly."""
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:  # another build holds the guide
        instance.event_log_storage.initialize_concurrency_limit_to_default("guide_model")
        instance.event_log_storage.claim_concurrency_slot("guide_model", "other-build-run", "mined_triplets")
    cmd = [sys.executable, "-m", "gistforge.cli", "build", "--no-finetune"]
    waiting = "gistforge: waiting for pool 'guide_model': its slots are held by run(s) other-bu"

    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(home, dagster_home), stdout=out, stderr=subprocess.STDOUT)
        wait_for_text(log, waiting, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    assert "gistforge: interrupted" in log.read_text()
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert not [r for r in instance.get_runs() if not r.is_finished], "no run left open"

    log = tmp_path / "second.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(home, dagster_home), stdout=out, stderr=subprocess.STDOUT)
        wait_for_text(log, waiting, proc)
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            instance.event_log_storage.free_concurrency_slots_for_run("other-build-run")
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert "gistforge: published local/gistforge-medi-mteb-triplets@" in log.read_text()


def test_a_second_build_on_a_busy_home_waits_for_it_visibly_and_stops_on_sigterm(tmp_path):
    """While one build holds the home, another says so (naming the holder) before starting any run."""
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from gistforge.orphans import build_lock\n"
         f"with build_lock({str(home)!r}, print):\n    print('held', flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        log = tmp_path / "second.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "gistforge.cli", "build", "--no-finetune"], cwd=ROOT,
                                    env=_env(home, dagster_home), stdout=out, stderr=subprocess.STDOUT)
            wait_for_text(log, f"(another gistforge build runs on it) to be free: held by pid {holder.pid}", proc)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 130
        assert "gistforge: interrupted" in log.read_text()
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            assert not instance.get_runs(), "no run started while it waited"
    finally:
        holder.kill()
        holder.wait()
