"""Atomic, durable file writes: write to a hidden temporary beside the target, fsync, then rename over it.

A killed process leaves at most a hidden temporary, never a half-written visible file; after a power loss
a renamed file holds its whole content (data and folder entry are fsynced). Temporaries are named
`.<name>.<host>.<pid>.<ms>.<random>`, so that on a folder shared by several hosts (NFS, a PVC) a write
sweeps only leftovers it can prove dead: this host's, of a process that no longer lives (or whose pid now
belongs to a process started later), at least `min_age_s` old. Another host's leftovers are swept only
after `FOREIGN_AFTER_S` (a week: no write takes that long). Files and folders get the modes the umask
gives (0644/0755 under 022), as a plain `open`/`mkdir` would, so a team's shared hub stays readable.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.common.pids import alive_since, host_id

FOREIGN_AFTER_S = 7 * 86400
MIN_AGE_S = 5.0  # a few seconds: more than the clock slack of `alive_since`
_RENAME_EXCHANGE = 2
_committed: dict[str, str] = {}


def _shape(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.(?P<ms>\d+)\.[a-z0-9_]{{8}}")


def sweep_stale(path: Path, min_age_s: float = MIN_AGE_S, now: float | None = None) -> list[Path]:
    """Remove temporaries of `path` whose writer is provably gone; returns what it removed."""
    path = Path(path)
    shape, here, now = _shape(path.name), host_id(), time.time() if now is None else now
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*"):
        m = shape.fullmatch(tmp.name)
        if not m:
            continue
        made = int(m["ms"]) / 1000
        age = now - made
        dead = (age >= min_age_s and not alive_since(int(m["pid"]), made)) if m["host"] == here \
            else age >= FOREIGN_AFTER_S
        if not dead:
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _prefix(path: Path) -> str:
    return f".{path.name}.{host_id()}.{os.getpid()}.{int(time.time() * 1000)}."


def umask() -> int:
    """The process's umask, read without changing it (Linux); else set-and-restore."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def identity(path: Path) -> str | None:
    """What tells this file from another written to the same name: modification time (ns) and size, both
    kept by a rename and by copies that keep times (`cp -p`, `rsync -a`, `shutil.copytree`); None for a
    folder (files written into it later must not change it)."""
    st = os.stat(path)
    return None if Path(path).is_dir() else f"{st.st_mtime_ns}-{st.st_size}"


def committed(path: Path) -> str | None:
    """The identity of what this process last renamed into `path`, or None (see `Workspace.save_report`)."""
    return _committed.get(str(Path(path)))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported (NFS, macOS)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), _RENAME_EXCHANGE) == 0
    except (AttributeError, OSError):
        return False


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write; it replaces `path`, durably, when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_prefix(path))
    os.fchmod(fd, 0o666 & ~umask())
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(Path(tmp))
        _committed[str(path)] = identity(Path(tmp)) or ""
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A temporary folder to fill; it replaces the folder `path` whole when the block ends without an error.

    The swap is one step where the OS has one (a reader sees the old folder or the new one, never neither);
    elsewhere the old folder is renamed aside, the new one in, and only then the old one removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_prefix(path)))
    os.chmod(tmp, 0o777 & ~umask())
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.exists() and _exchange(tmp, path):
            shutil.rmtree(tmp)  # now the old folder
        elif path.exists():
            aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=_prefix(path)))
            os.replace(path, aside / "old")
            os.replace(tmp, path)
            shutil.rmtree(aside)
        else:
            os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
