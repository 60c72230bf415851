"""Atomic writes: a failed write leaves nothing, modes follow the umask, and a sweep removes only the
leftovers whose writer is provably gone (this host's dead processes), never another host's live write."""

from __future__ import annotations

import os
import stat
import subprocess
import time

import pytest

from pipeline.common import atomic, pids


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _leftover(folder, name, host, pid, made):
    path = folder / f".{name}.{host}.{pid}.{int(made * 1000)}.abcd1234"
    path.write_text("half")
    return path


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_only_this_hosts_dead_old_enough_leftovers_are_swept(tmp_path):
    """Issue 23 #3: on a folder two hosts share, host B's sweep keeps host A's live temporary; a pid now held by
    a process started after the temporary (a container's reused pid 1) counts as dead; a name that merely
    starts like another target's temporary is not that target's."""
    here, now = pids.host_id(), time.time() + 1000  # the sweep runs "later": every leftover below is old enough
    started = pids.started_at(os.getpid())
    assert started is not None and started <= time.time()
    dead_old = _leftover(tmp_path, "build", here, _dead_pid(), now - 120)
    dead_young = _leftover(tmp_path, "build", here, _dead_pid(), now - 1)
    live = _leftover(tmp_path, "build", here, os.getpid(), started + 0.5)
    reused = _leftover(tmp_path, "build", here, os.getpid(), started - 3600)  # made before this process existed
    other_host = _leftover(tmp_path, "build", "host-a", _dead_pid(), now - 120)
    other_host_ancient = _leftover(tmp_path, "build", "host-a", 1, now - atomic.FOREIGN_AFTER_S - 60)
    other_target = _leftover(tmp_path, "build.999999.parquet", here, _dead_pid(), now - 120)  # task "build.999999"
    old_style = tmp_path / f".build.{_dead_pid()}.abc"
    old_style.write_text("a leftover of the old naming: not provably ours")
    removed = {p.name for p in atomic.sweep_stale(tmp_path / "build", now=now)}
    assert removed == {dead_old.name, reused.name, other_host_ancient.name}
    for kept in (dead_young, live, other_host, other_target, old_style):
        assert kept.exists(), kept.name
    assert atomic.sweep_stale(tmp_path / "build.999999.parquet", now=now) == [other_target]


def test_two_hosts_on_one_folder_do_not_break_each_others_writes(tmp_path, monkeypatch):
    """Host A holds a temporary open (a long embedding chunk write) while host B writes the same target."""
    monkeypatch.setattr(atomic, "host_id", lambda: "host-a")
    monkeypatch.setattr(atomic, "MIN_AGE_S", 0.0)
    target = tmp_path / "chunk.npy"
    with atomic.atomic_path(target) as a_tmp:
        a_tmp.write_text("A")
        monkeypatch.setattr(atomic, "host_id", lambda: "host-b")
        monkeypatch.setattr(atomic, "alive_since", lambda pid, t: False)  # to B, A's pid means nothing
        atomic.write_text(target, "B")  # B's write sweeps: A's temporary is another host's, so it stays
        assert a_tmp.exists()
    assert target.read_text() == "A"


@pytest.mark.parametrize("mask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_modes_follow_the_umask(tmp_path, mask, file_mode, dir_mode):
    """Issue 22 #3: a shared local hub is readable by the team under umask 022 (mkstemp/mkdtemp alone give
    0600/0700 whatever the umask)."""
    old = os.umask(mask)
    try:
        atomic.write_text(tmp_path / "ref", "x")
        with atomic.atomic_dir(tmp_path / "snap") as tmp:
            (tmp / "data").mkdir()
            (tmp / "data" / "a.parquet").write_text("1")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)
    assert mode(tmp_path / "ref") == file_mode and mode(tmp_path / "snap" / "data" / "a.parquet") == file_mode
    assert mode(tmp_path / "snap") == dir_mode and mode(tmp_path / "snap" / "data") == dir_mode


@pytest.mark.parametrize("exchange", [True, False])
def test_atomic_dir_replaces_a_previous_folder_whole(tmp_path, monkeypatch, exchange):
    if not exchange:  # where the OS has no one-step swap (NFS): aside, in, then remove
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    dest = tmp_path / "build"
    with atomic.atomic_dir(dest) as tmp:
        (tmp / "a").write_text("1")
    with atomic.atomic_dir(dest) as tmp:
        (tmp / "b").write_text("2")
        assert (dest / "a").exists(), "the old folder stays whole until the new one is complete"
    assert sorted(p.name for p in dest.iterdir()) == ["b"]
    with pytest.raises(RuntimeError), atomic.atomic_dir(dest) as tmp:
        (tmp / "c").write_text("3")
        raise RuntimeError("killed")
    assert sorted(p.name for p in dest.iterdir()) == ["b"] and [p.name for p in tmp_path.iterdir()] == ["build"]


def test_a_swap_never_shows_a_half_deleted_folder(tmp_path):
    """Issue 23 #2: the old `atomic_dir` removed the old folder file by file, then renamed; a reader in between
    saw some of the old files. Here every look sees one whole version."""
    dest = tmp_path / "build"
    names = [f"f{i:03d}" for i in range(300)]
    with atomic.atomic_dir(dest) as tmp:
        for n in names:
            (tmp / n).write_text("old")
    from tests.waiting import until

    reader = subprocess.Popen(["python3", "-c", f"""
import os, time
misses = 0; looks = 0; end = time.time() + 300
while time.time() < end and not os.path.exists({str(tmp_path / 'done')!r}):
    looks += 1
    misses += not all(os.path.exists(os.path.join({str(dest)!r}, n)) for n in ("f000", "f150", "f299"))
    if looks == 1:
        open({str(tmp_path / 'looking')!r}, "w").close()
print(misses, looks)
"""], stdout=subprocess.PIPE, text=True)
    # the swaps start once the reader is looking (a fixed head start could be over before it even started)
    until("the reader's first look", (tmp_path / "looking").exists, 120, every_s=0.05, proc=reader)
    for _ in range(5):
        with atomic.atomic_dir(dest) as tmp:
            for n in names:
                (tmp / n).write_text("new")
    (tmp_path / "done").write_text("")
    misses, looks = map(int, reader.communicate(timeout=30)[0].split())
    assert looks > 0 and misses == 0, f"{misses} of {looks} looks found a file of the version missing"
