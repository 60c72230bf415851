"""Typed build configuration: `BuildConfig` and the sections that describe sources (the built-in profiles and
YAML loading are `pipeline.profiles`). The mining, cleaning, training and network sections are declared with
the code that reads them and composed here.

A configuration is plain data, loaded once by whoever starts a build (the CLI, or the Dagster code location's
loader in `assets`) and handed on explicitly: nothing here reads the environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline import task_types
from pipeline.common.retry import NetworkConfig  # these sections are declared with the code that reads them
from pipeline.common.settings import SAFE_NAME as _SAFE_NAME
from pipeline.common.settings import Settings as _Strict
from pipeline.common.settings import checked_repo_id as _repo_id
from pipeline.registry import DEFAULT_EXCLUSIONS, MTEB_TASKS
from pipeline.road.label_noise import CleanConfig
from pipeline.road.miner import MiningConfig
from pipeline.road.train import TrainConfig

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
_COMMIT = re.compile(r"[0-9a-f]{40}")
SAMPLE_MEDI_COMMIT = "0" * 40  # the shipped sample's (and ../shared/data's) MEDI snapshot


def is_commit(revision: str) -> bool:
    return bool(_COMMIT.fullmatch(revision))


class MediSource(_Strict):
    """Where MEDI comes from: the Hub parquet dataset, or the original `medi-data.json` file."""

    kind: Literal["hub", "json"] = "hub"
    repo_id: str = "avsolatorio/medi-data"
    revision: str = "main"
    path: Path | None = None
    cache_dir: Path | None = Field(None, description="Hub cache to read; None = HF_HUB_CACHE")
    license: str | None = Field(None, description="the licence, when the snapshot's own card does not give one")

    @field_validator("repo_id")
    @classmethod
    def _repo(cls, v: str) -> str:
        return _repo_id(v, "medi.repo_id")

    @model_validator(mode="after")
    def _path_for_json(self) -> "MediSource":
        if self.kind == "json" and self.path is None:
            raise ValueError("MEDI source kind 'json' needs `path` (the medi-data.json file)")
        return self


class TaskSource(_Strict):
    """One labelled classification split: an MTEB task from the Hub, or a local file with a column map."""

    name: str
    kind: Literal["hub", "local"] = "hub"
    path: Path | None = None
    revision: str | None = Field(None, description="override the registry pin (hub only)")
    cache_dir: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    label_text_column: str | None = "label_text"
    test_path: Path | None = Field(None, description="local held-out split to decontaminate against (local only)")
    license: str | None = Field(None, description="the licence, when neither the snapshot's card nor the registry "
                                                  "gives one (a local file's licence)")

    @field_validator("name")
    @classmethod
    def _safe(cls, v: str) -> str:
        if not _SAFE_NAME.fullmatch(v):
            raise ValueError(f"task name {v!r} must match {_SAFE_NAME.pattern} (it is used in file names)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "TaskSource":
        if self.kind == "hub" and self.name not in MTEB_TASKS:
            known = ", ".join(sorted(MTEB_TASKS))
            raise ValueError(f"unknown MTEB task {self.name!r} for a hub source; known: {known}")
        if self.kind == "local" and self.path is None:
            raise ValueError(f"local task source {self.name!r} needs `path`")
        if self.kind == "local" and self.name in MTEB_TASKS:
            raise ValueError(f"local task source {self.name!r} has an MTEB task's name, so its rows would be tagged "
                             f"{MTEB_TASKS[self.name].task_type!r} / source 'mteb' (only MTEB rows may be): rename it, "
                             f"e.g. 'My{self.name}'")
        return self

    @property
    def is_mteb(self) -> bool:
        return self.name in MTEB_TASKS

    @property
    def task_type(self) -> str:
        """`mteb_<slug>` for MTEB tasks and only them; `local_<slug>` for other labelled files (`task_types`)."""
        return MTEB_TASKS[self.name].task_type if self.is_mteb else task_types.local(self.name)


class DecontaminationConfig(_Strict):
    """Keep MTEB test texts out of training: exact (normalised) matches always, paraphrases optionally."""

    exact: bool = True
    near_duplicate_threshold: float | None = Field(
        None, gt=0, le=1, description="also drop task texts whose guide similarity to a test text is >= this")


class BuildConfig(_Strict):
    profile: str
    medi: MediSource | None = MediSource()
    tasks: list[TaskSource]
    exclusions: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_EXCLUSIONS))
    guide_model: str = "BAAI/bge-base-en-v1.5"
    guide_revision: str | None = None
    base_model: str | None = Field(None, description="encoder to fine-tune; None = the guide model")
    encode_batch_size: int = 64
    guide_precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="arithmetic the guide encodes in; auto: fp16 on CUDA, bf16 on a CPU with AMX or "
                            "AVX-512 BF16, fp32 elsewhere (reduced precision: agreement with fp32 is measured "
                            "per mining step, see pipeline/road/precision.py)")
    mining: MiningConfig = MiningConfig()
    clean: CleanConfig = CleanConfig()
    decontamination: DecontaminationConfig = DecontaminationConfig()
    training: TrainConfig = TrainConfig()
    network: NetworkConfig = NetworkConfig()
    seed: int = 42
    dataset_repo_id: str = "local/gistforge-medi-mteb-triplets"
    allow_unpinned: bool = Field(False, description="accept a Hub source read at a branch or tag rather than a "
                                                    "commit (the card then says it was read from a moving ref)")
    max_shard_bytes: int = Field(500 * 1024**2, ge=1024)

    @field_validator("dataset_repo_id")
    @classmethod
    def _repo(cls, v: str) -> str:
        return _repo_id(v, "dataset_repo_id")

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        if not _SAFE_NAME.fullmatch(v) or ".." in v:
            raise ValueError(f"profile {v!r} must match {_SAFE_NAME.pattern} (it names work folders)")
        return v

    @model_validator(mode="after")
    def _pinned(self) -> "BuildConfig":
        moving = [f"medi.revision {self.medi.revision!r}"] if self.medi and self.medi.kind == "hub" and \
            not is_commit(self.medi.revision) else []
        moving += [f"tasks[{t.name}].revision {t.revision!r}" for t in self.tasks if t.revision and not is_commit(t.revision)]
        if moving and not self.allow_unpinned:
            raise ValueError(f"{', '.join(moving)} is not a commit: pin a 40-hex commit, or set allow_unpinned: true "
                             "to read a moving branch (the card will say so)")
        return self

    @model_validator(mode="after")
    def _unique_tasks(self) -> "BuildConfig":
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tasks listed twice: {dupes}")
        clashes = _task_type_clashes(self.tasks)
        if clashes:
            raise ValueError("; ".join(clashes) + ": rename one of each (a task_type names one per-task config and "
                             "folder, and task names name files on case-insensitive disks too)")
        return self

    @property
    def included_tasks(self) -> list[TaskSource]:
        """Tasks that are ingested: the excluded ones never are."""
        return [t for t in self.tasks if t.name not in self.exclusions]

    @property
    def excluded_tasks(self) -> dict[str, str]:
        """Configured tasks dropped by the exclusion policy, with the reason for each."""
        return {t.name: self.exclusions[t.name] for t in self.tasks if t.name in self.exclusions}

    def task(self, name: str) -> TaskSource:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"task {name!r} is not configured in profile {self.profile!r}")


def _task_type_clashes(tasks: list[TaskSource]) -> list[str]:
    """Pairs of tasks that would share a `task_type` (`FooBar`, `foo_bar`, `Foo.Bar` -> `local_foo_bar`) or a
    case-folded name, and be merged into one per-task config or one split file."""
    seen: dict[str, str] = {}
    clashes = []
    for t in tasks:
        for key, what in ((t.task_type.casefold(), f"task_type {t.task_type!r}"),
                          (f"name:{t.name.casefold()}", "one name up to case")):
            if key in seen and seen[key] != t.name:
                clashes.append(f"tasks {seen[key]!r} and {t.name!r} share {what}")
                break
            seen.setdefault(key, t.name)
    return clashes
