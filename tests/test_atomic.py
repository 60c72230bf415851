"""Atomic writes: a failed write leaves nothing, and leftovers of killed processes are swept by the next write."""

from __future__ import annotations

import os
import subprocess

import pytest

from pipeline.common import atomic


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_leftovers_of_dead_processes_are_swept_and_live_ones_kept(tmp_path):
    dead, live = _dead_pid(), os.getppid()
    (tmp_path / f".build.{dead}.abc").mkdir()
    (tmp_path / f".build.{dead}.abc" / "train-00000-of-00001.parquet").write_bytes(b"half")
    (tmp_path / f".build.{live}.def").mkdir()
    (tmp_path / f".report.json.{dead}.x1").write_text("half")
    (tmp_path / ".build.notapid.x").mkdir()  # not ours: left alone
    with atomic.atomic_dir(tmp_path / "build") as tmp:
        (tmp / "README.md").write_text("card")
    atomic.write_text(tmp_path / "report.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".build.{live}.def", ".build.notapid.x", "build", "report.json"])
    assert (tmp_path / "build" / "README.md").read_text() == "card"


def test_atomic_dir_replaces_a_previous_folder_whole(tmp_path):
    dest = tmp_path / "build"
    with atomic.atomic_dir(dest) as tmp:
        (tmp / "a").write_text("1")
    with atomic.atomic_dir(dest) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in dest.iterdir()) == ["b"]
    with pytest.raises(RuntimeError), atomic.atomic_dir(dest) as tmp:
        (tmp / "c").write_text("3")
        raise RuntimeError("killed")
    assert sorted(p.name for p in dest.iterdir()) == ["b"] and [p.name for p in tmp_path.iterdir()] == ["build"]
