"""Are the pinned upstream revisions still the latest on the Hub? Reported, never auto-bumped."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from pipeline.config import BuildConfig
from pipeline.registry import get_task

log = logging.getLogger(__name__)


def pinned_revisions(cfg: BuildConfig) -> dict[str, tuple[str, str]]:
    """task name -> (Hub repo, pinned revision), for every included Hub source (and MEDI)."""
    pins = {t.name: (get_task(t.name).hub_id, t.revision or get_task(t.name).revision)
            for t in cfg.included_tasks if t.kind == "hub"}
    if cfg.medi is not None and cfg.medi.kind == "hub":
        pins["MEDI"] = (cfg.medi.repo_id, cfg.medi.revision)
    return pins


class PinStatus(BaseModel):
    source: str
    repo_id: str
    pinned: str
    latest: str | None
    status: str  # current | behind | unknown (<error type>)


def check_pins(api: Any, cfg: BuildConfig) -> list[PinStatus]:
    """One row per pinned source: latest `main` sha on the Hub, and whether the pin is behind it."""
    rows = []
    for name, (repo, pinned) in pinned_revisions(cfg).items():
        try:
            latest = api.dataset_info(repo, revision="main").sha
            rows.append(PinStatus(source=name, repo_id=repo, pinned=pinned, latest=latest,
                                  status="current" if latest == pinned else "behind"))
        except Exception as exc:  # noqa: BLE001 - reported per source; one unreachable repo must not hide others
            rows.append(PinStatus(source=name, repo_id=repo, pinned=pinned, latest=None,
                                  status=f"unknown ({type(exc).__name__})"))
    return rows
