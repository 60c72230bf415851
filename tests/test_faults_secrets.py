"""A build killed mid-run resumes on rerun; and a token in the environment leaks nowhere."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = "hf_LEAKCANARY0123456789abcdef"


def _env(home: Path, dagster_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GISTFORGE_")}
    env.update({"GISTFORGE_HOME": str(home), "DAGSTER_HOME": str(dagster_home), "HF_TOKEN": SENTINEL,
                "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


def _claimed_slots(dagster_home: Path) -> list[tuple[str, str]]:
    if not (dagster_home / "history" / "runs.db").exists():
        return []
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        storage = instance.event_log_storage
        return [(s.run_id, s.step_key) for key in storage.get_concurrency_keys()
                for s in storage.get_concurrency_info(key).claimed_slots]


def test_killed_build_resumes_and_no_token_leaks(tmp_path):
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    env = _env(home, dagster_home)
    cmd = [sys.executable, "-m", "gistforge.cli", "build"]
    first_task = home / "work" / "embedded" / "triplets" / "Banking77Classification.json"

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (first_task.exists() and _claimed_slots(dagster_home)):
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.time() < deadline, "the first partition never finished"
        time.sleep(0.05)
    # mid-step, holding a pool slot: later partitions, build and publish not done
    os.killpg(proc.pid, signal.SIGKILL)
    killed_runs = {r for r, _ in _claimed_slots(dagster_home)}
    killed_output = proc.communicate()[0].decode()
    assert not (home / "hub").exists() or not list((home / "hub").rglob("refs/2*")), "nothing published yet"
    visible = [p for p in home.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(home).parts)]
    for p in visible:  # every visible file is complete: parquet files parse, json files load
        if p.suffix == ".parquet":
            pl.read_parquet(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())

    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gistforge: published local/gistforge-medi-mteb-triplets@" in done.stdout
    report = json.loads(first_task.read_text())
    # the killed run was closed and its slot freed, else the rerun would have waited for it forever
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert {instance.get_run_by_id(r).status for r in killed_runs} == {dg.DagsterRunStatus.FAILURE}
    assert not _claimed_slots(dagster_home)
    assert report["encode"]["encoded"] == 0, "texts encoded before the kill were not encoded again"

    # the token was in the environment of both runs: it must appear in no output, file, card or event log
    texts = [killed_output, done.stdout, done.stderr]
    for root in (home, dagster_home):
        for p in root.rglob("*"):
            if p.is_file():
                texts.append(p.read_bytes().decode("utf-8", "replace"))
    assert texts and all(SENTINEL not in t for t in texts)
