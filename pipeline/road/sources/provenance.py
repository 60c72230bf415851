"""Where a source came from, for the dataset card: the resolved commit and the licence, with where it was found."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from pipeline.config import SAMPLE_DIR, MediSource, TaskSource, is_commit
from pipeline.registry import get_task
from pipeline.road.sources.hub import pin
from pipeline.road.sources.layouts import _inside

log = logging.getLogger(__name__)


class Provenance(BaseModel):
    """A source as its stage report, the asset metadata and the card's provenance table record it: names and
    commits only, never a machine path (a local file is named by its file name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["hub", "local", "json"]
    task: str | None = None  # None for MEDI
    repo_id: str | None = None
    config: str | None = None
    split: str | None = None
    path: str | None = None  # a local file's name
    columns: dict[str, str | None] | None = None  # a local task's text and label columns
    sample: bool = False  # read from the sample shipped in the package
    revision: str | None = None  # as configured (a commit, or a moving ref such as `main`)
    commit: str | None = None  # what it resolved to
    moving_ref: bool = False
    license: str
    license_from: str


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


def _license(found: str | None, fallback: str | None, fallback_from: str) -> dict[str, str]:
    if found:
        return {"license": found, "license_from": "the source's dataset card"}
    if fallback:
        return {"license": fallback, "license_from": fallback_from}
    return {"license": "unknown", "license_from": "not declared by the source's card, the registry or the config"}


def describe(src: TaskSource | MediSource, folder: Path | None) -> Provenance:
    """Where `src` came from; `folder` is its resolved snapshot (None for a local file). The licence is the
    snapshot card's, else the config's, else (for a registry task) the registry's."""
    if folder is None:
        if isinstance(src, TaskSource):
            return Provenance(kind="local", task=src.name, path=Path(src.path).name if src.path else None,
                              columns={"text": src.text_column, "label": src.label_column},
                              **_license(None, src.license, "the build config"))
        return Provenance(kind="json", path=Path(src.path).name, **_license(None, src.license, "the build config"))
    revision = pin(src)[1]
    hub = {"kind": "hub", "sample": _is_sample(src.cache_dir), "revision": revision, "commit": folder.name,
           "moving_ref": not is_commit(revision)}
    if isinstance(src, TaskSource):
        task = get_task(src.name)
        fallback, fallback_from = (src.license, "the build config") if src.license else (task.license, "the registry")
        return Provenance(task=src.name, repo_id=task.hub_id, config=task.config, split=task.split, **hub,
                          **_license(card_license(folder), fallback, fallback_from))
    return Provenance(repo_id=src.repo_id, **hub, **_license(card_license(folder), src.license, "the build config"))
