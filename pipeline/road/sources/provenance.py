"""Where a source came from, for the dataset card: the resolved commit and the licence, with where it was found."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.common.retry import RetryBudget
from pipeline.config import SAMPLE_DIR, MediSource, TaskSource, is_commit
from pipeline.registry import get_task
from pipeline.road.sources.hub import pin, snapshot_folder
from pipeline.road.sources.layouts import _inside

log = logging.getLogger(__name__)


def _is_sample(cache_dir: Path | str | None) -> bool:
    """Whether a source reads the sample shipped in the package (the card says so), not a real cache."""
    return bool(cache_dir) and Path(cache_dir).resolve().is_relative_to(SAMPLE_DIR.resolve())


def card_license(folder: Path) -> str | None:
    """The `license` a snapshot's own dataset card (README.md front matter) declares, if any."""
    card = folder / "README.md"
    if not card.is_file():
        return None
    _inside(card, folder, f"snapshot {folder}", "README.md")
    try:
        from huggingface_hub import DatasetCard

        value = DatasetCard.load(card).data.get("license")
    except Exception as exc:  # noqa: BLE001 - an unreadable card only means no licence from it
        log.warning("%s: cannot read its licence (%s)", card, exc)
        return None
    if isinstance(value, list):
        value = ", ".join(map(str, value))
    return str(value) if value else None


def _license(found: str | None, fallback: str | None, fallback_from: str) -> dict:
    if found:
        return {"license": found, "license_from": "the source's dataset card"}
    if fallback:
        return {"license": fallback, "license_from": fallback_from}
    return {"license": "unknown", "license_from": "not declared by the source's card, the registry or the config"}


def _hub_provenance(src: TaskSource | MediSource, folder: Path, fallback: str | None, fallback_from: str) -> dict:
    revision = pin(src)[1]
    return {"revision": revision, "commit": folder.name, "moving_ref": not is_commit(revision),
            **_license(card_license(folder), fallback, fallback_from)}


def describe_task_source(src: TaskSource, budget: RetryBudget | None = None, folder: Path | None = None) -> dict:
    """Provenance of a task source for the dataset card: where, at which resolved commit, under which licence."""
    if src.kind == "local":
        return {"task": src.name, "kind": "local", "path": src.path.name if src.path else None,
                "columns": {"text": src.text_column, "label": src.label_column},
                **_license(None, src.license, "the build config")}
    task = get_task(src.name)
    fallback, fallback_from = (src.license, "the build config") if src.license else (task.license, "the registry")
    return {"task": src.name, "kind": "hub", "repo_id": task.hub_id, "config": task.config, "split": task.split,
            "sample": _is_sample(src.cache_dir),
            **_hub_provenance(src, snapshot_folder(src, budget, folder), fallback, fallback_from)}


def describe_medi_source(src: MediSource, budget: RetryBudget | None = None, folder: Path | None = None) -> dict:
    """Provenance of MEDI for the dataset card (as `describe_task_source`)."""
    if src.kind == "json":
        return {"kind": "json", "path": Path(src.path).name, **_license(None, src.license, "the build config")}
    return {"kind": "hub", "repo_id": src.repo_id, "sample": _is_sample(src.cache_dir),
            **_hub_provenance(src, snapshot_folder(src, budget, folder), src.license, "the build config")}
