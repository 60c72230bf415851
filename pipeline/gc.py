"""What a home folder holds, and what no kept version or the current configuration needs (`gistforge gc`).

Removable: embedding-cache folders no mined task of the profile was made with (another guide, precision or
sequence length: a rebuild with that setup would encode again), work files of tasks the configuration no
longer has, local-hub versions past the newest `keep` (never the one `main` points at, nor the one this
profile's last publish made), models fine-tuned on versions that are not kept (never one that guides a later
mining round, `mining.rounds`), and the training checkpoints of fine-tunes that finished. Other profiles' work folders are listed, never removed.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from pipeline.config import BuildConfig
from pipeline.road.local_hub import LocalHub
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)


class GcItem(BaseModel):
    path: str
    bytes: int
    kind: Literal["embeddings", "work", "version", "model", "checkpoints", "openvino"]
    remove: bool
    why: str


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _rounds(ws: Workspace, cfg: BuildConfig) -> list[Workspace]:
    """Every mining round's view of the workspace (`mining.rounds`): each round's mined files are needed."""
    return [ws.at_round(r, cfg.mining.rounds) for r in range(1, cfg.mining.rounds + 1)]


def _used_cache_keys(ws: Workspace, cfg: BuildConfig) -> set[str]:
    from pipeline.road.mine import MineReport

    keys = set()
    for view in _rounds(ws, cfg):
        for src in cfg.included_tasks:
            try:
                keys.add(view.load_report(view.triplets(src.name), MineReport).guide.cache_key)
            except (FileNotFoundError, ValueError, RuntimeError):
                continue
    return keys


def _guide_models(ws: Workspace, cfg: BuildConfig) -> dict[str, int]:
    """The tags whose fine-tuned models guide a later mining round, and which round each guides."""
    from pipeline.road.rounds import RoundEncoder

    guides = {}
    for view in _rounds(ws, cfg)[:-1]:
        try:
            guides[view.load_report(view.round_encoder(), RoundEncoder).tag] = view.round + 1
        except (FileNotFoundError, ValueError, RuntimeError):
            continue
    return guides


def _embeddings(ws: Workspace, cfg: BuildConfig) -> list[GcItem]:
    if not ws.embeddings.is_dir():
        return []
    used = _used_cache_keys(ws, cfg)
    return [GcItem(path=str(d), bytes=size_of(d), kind="embeddings", remove=d.name not in used,
                   why="used by this profile's mined tasks" if d.name in used else
                   f"no mined task of profile {cfg.profile!r} was encoded with it")
            for d in sorted(ws.embeddings.iterdir()) if d.is_dir()]


def _openvino_graphs(cfg: BuildConfig) -> list[GcItem]:
    """The guide graphs OpenVINO converted (`openvino_guide`, kept per machine, not per home): the one this
    configuration's guide uses with the libraries installed now is kept; one of another guide is kept too
    (another profile may use it); one of this guide under other library versions is never read again."""
    from pipeline.road.openvino_guide import ir_cache_root, ir_folder, openvino_available
    from pipeline.road.model_ref import resolve_model

    root = ir_cache_root()
    if root is None or not root.is_dir() or not openvino_available():
        return []
    try:
        ref = resolve_model(cfg.guide_model, cfg.guide_revision)
    except ValueError:  # the guide is not on this machine: no graph can be judged stale
        ref = None
    current = ir_folder(ref.name, ref.revision, root) if ref else None
    items = []
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith("."):
            continue
        try:
            label = json.loads((d / "model.json").read_text()) if (d / "model.json").is_file() else {}
        except (OSError, ValueError):
            label = {}
        stale = ref is not None and d != current and label.get("name") == ref.name \
            and label.get("revision") == ref.revision
        items.append(GcItem(path=str(d), bytes=size_of(d), kind="openvino", remove=stale,
                            why="this guide under other library versions: never read again" if stale else
                            "this guide, as the installed libraries read it" if d == current else
                            f"another guide ({label.get('name', 'unknown')}): judged by its own profile"))
    return items


def _work(ws: Workspace, cfg: BuildConfig) -> list[GcItem]:
    items = []
    tasks = {t.name for t in cfg.included_tasks}
    folders = {ws.split("_").parent} | {p(view, "_").parent for view in _rounds(ws, cfg)
                                        for p in (Workspace.triplets, Workspace.candidates, Workspace.corpus)}
    for folder in sorted(folders):
        for f in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
            if f.stem not in tasks:
                for part in (f, f.with_suffix(".json"), f.with_suffix(".png")):
                    if part.exists():
                        items.append(GcItem(path=str(part), bytes=size_of(part), kind="work", remove=True,
                                            why=f"task {f.stem!r} is not in the configuration"))
    others = ws.home / "work"
    for d in sorted(others.iterdir()) if others.is_dir() else []:
        if d.is_dir() and d.name != ws.profile:
            items.append(GcItem(path=str(d), bytes=size_of(d), kind="work", remove=False,
                                why=f"profile {d.name!r}: judged only by `gistforge gc --profile {d.name}`"))
    return items


def _versions(ws: Workspace, cfg: BuildConfig, hub: LocalHub, keep: int) -> tuple[list[GcItem], set[str]]:
    from pipeline.road.publish import last_published

    from pipeline.versions import LocalVersions, newest_first

    tags = hub.tags(cfg.dataset_repo_id)
    order = newest_first(LocalVersions(hub.root, cfg.dataset_repo_id))  # `gistforge versions`' order
    kept = set(order[:keep])
    if (main := hub.latest(cfg.dataset_repo_id)) is not None:
        kept.add(main)
    try:
        kept.add(last_published(ws).tag)
    except (FileNotFoundError, ValueError, RuntimeError):
        pass
    repo = hub.repo_dir(cfg.dataset_repo_id)
    items = [GcItem(path=str(repo / "snapshots" / rev), bytes=size_of(repo / "snapshots" / rev), kind="version",
                    remove=tag not in kept, why=f"{tag}: " + ("kept" if tag in kept else f"older than the newest {keep}"))
             for tag, rev in ((t, tags[t]) for t in order)]
    return items, kept


def _models(ws: Workspace, kept: set[str], guides: dict[str, int]) -> list[GcItem]:
    root = ws.home / "models" / ws.profile
    items = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if not d.is_dir():
            continue
        if d.name in guides:
            items.append(GcItem(path=str(d), bytes=size_of(d), kind="model", remove=False,
                                why=f"fine-tuned on mining round {guides[d.name] - 1}'s build: guides round "
                                    f"{guides[d.name]}"))
        elif d.name not in kept:
            items.append(GcItem(path=str(d), bytes=size_of(d), kind="model", remove=True,
                                why=f"fine-tuned on {d.name}, a version that is not kept"))
        elif (d / "runs").is_dir() and ws.report_path(d / "model").exists():
            items.append(GcItem(path=str(d / "runs"), bytes=size_of(d / "runs"), kind="checkpoints", remove=True,
                                why="checkpoints of a fine-tune that finished (its model is saved)"))
    return items


def collect(ws: Workspace, cfg: BuildConfig, hub: LocalHub | None, keep: int = 5) -> list[GcItem]:
    """Everything `gc` looks at, each with whether it would be removed and why. `hub`: the local hub (None
    when versions live on the Hugging Face Hub, whose versions gc never touches)."""
    versions, kept = _versions(ws, cfg, hub, keep) if hub is not None else ([], None)
    if kept is None:
        kept = {p.name for p in (ws.home / "models" / ws.profile).glob("*")}  # Hub versions: keep every model
    return [*_embeddings(ws, cfg), *_work(ws, cfg), *versions, *_models(ws, kept, _guide_models(ws, cfg)),
            *_openvino_graphs(cfg)]


def remove(items: list[GcItem], hub: LocalHub | None, repo_id: str) -> int:
    """Remove the items marked so; a version loses its tag ref first (so it is never half visible). Bytes freed."""
    freed = 0
    refs = hub.repo_dir(repo_id) / "refs" if hub is not None else None
    for item in items:
        if not item.remove:
            continue
        path = Path(item.path)
        if item.kind == "version" and refs is not None:
            for ref in refs.iterdir():
                if ref.is_file() and ref.name != "main" and ref.read_text().strip() == path.name:
                    ref.unlink()
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        log.info("removed %s (%s bytes): %s", path, item.bytes, item.why)
        freed += item.bytes
    return freed
