"""Where a profile's files live, how a stage writes them, and when a rerun may reuse them.

Every stage declares once, in a `StageSpec` beside its function, what its output depends on: its version
and its settings, minus an explicit list of performance knobs that never change the output (in the spirit
of `datasets`' `fingerprint_transform(version=..., ignore_kwargs=[...])`); `StageSpec.identify` turns a
run's settings and inputs into a typed `StageIdentity` that reuse, the report and `gistforge plan` share.
The same version is the Dagster asset's `code_version`, so "stale in the UI" and "redone on rerun" always
agree.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

import polars as pl
from pydantic import BaseModel, ConfigDict

from pipeline.common import atomic, locks

log = logging.getLogger(__name__)


class StageReport(BaseModel):
    """What a stage did, saved as JSON beside its output after the output is committed.

    A report on disk therefore means the output is complete; `fingerprint` says what it was made from.
    """

    model_config = ConfigDict(extra="forbid")

    fingerprint: str
    reused: bool = False


R = TypeVar("R", bound=StageReport)
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
_OUTPUT = "output_identity"
_PARTS = "fingerprint_parts"  # what a report's fingerprint hashed, so `gistforge plan` can say what changed


class StaleOutputError(RuntimeError):
    """A stage's output is no longer the one its report describes."""


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


@dataclass(frozen=True)
class StageSpec:
    """A stage's identity for reuse: bump `version` when its output changes for the same inputs.

    `ignore` names settings (dotted, e.g. `mining.query_batch`) that only change speed or memory.
    """

    name: str
    version: str
    ignore: frozenset[str] = field(default_factory=frozenset)

    def settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The settings the output depends on: every given one except the ignored knobs (each of which must
        be among them: an ignore that names nothing is a knob renamed or gone)."""
        flat = _flatten(settings)
        if unknown := self.ignore - set(flat):
            raise ValueError(f"stage {self.name!r} ignores {sorted(unknown)}, which its settings do not hold")
        return {k: v for k, v in flat.items() if k not in self.ignore}

    def identify(self, settings: Mapping[str, Any], inputs: Mapping[str, Any]) -> StageIdentity:
        """What this stage's output is made of: version, semantic settings and inputs (source identities,
        upstream fingerprints), and their hash."""
        kept = self.settings(settings)
        blob = json.dumps([self.name, self.version, kept, _flatten(inputs)], sort_keys=True, default=str)
        parts = json.loads(json.dumps(
            {"version": self.version, **{f"settings.{k}": v for k, v in kept.items()},
             **{f"inputs.{k}": v for k, v in _flatten(inputs).items()}}, default=str))
        return StageIdentity(hashlib.sha256(blob.encode()).hexdigest()[:16], parts)


@dataclass(frozen=True)
class StageIdentity:
    """One stage run's identity: the `fingerprint` its report records and reuse compares, and the `parts` it
    hashed, which the report keeps so that `gistforge plan` can say which of them changed."""

    fingerprint: str
    parts: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Workspace:
    """A profile's intermediate files, embedding cache, local hub and models under one home folder.

    With `mining.rounds` > 1 (`pipeline.road.rounds`) a workspace is one round's view: `round` says whose mined
    files (triplets, candidates, corpus) it reads and writes (round 1's where a one-round build keeps them,
    round r's under `round<r>/`), and `final` whether its build is the profile's own (`build/`, what is
    published) or an earlier round's (under `round<r>/`). Ingest, MEDI and the embedding cache are shared.
    """

    home: Path
    profile: str
    round: int = 1
    final: bool = True

    def at_round(self, r: int, rounds: int) -> "Workspace":
        """This workspace as round `r` of `rounds` sees it."""
        if not 1 <= r <= rounds:
            raise ValueError(f"round {r} of {rounds}: rounds count from 1")
        return dataclasses.replace(self, round=r, final=r == rounds)

    def _mined(self) -> Path:
        return self.work if self.round == 1 else self.work / f"round{self.round}"

    def _built(self) -> Path:
        return self.work if self.final else self.work / f"round{self.round}"

    @property
    def work(self) -> Path:
        return self.home / "work" / self.profile

    @property
    def hub(self) -> Path:
        return self.home / "hub"

    @property
    def embeddings(self) -> Path:
        return self.home / "embeddings"

    def medi_rows(self) -> Path:
        return self.work / "medi" / "rows.parquet"

    def split(self, task: str) -> Path:
        return self.work / "splits" / f"{task}.parquet"

    def triplets(self, task: str) -> Path:
        return self._mined() / "triplets" / f"{task}.parquet"

    def candidates(self, task: str) -> Path:
        return self._mined() / "candidates" / f"{task}.parquet"

    def corpus(self, task: str) -> Path:
        return self._mined() / "corpus" / f"{task}.parquet"

    def test_texts(self) -> Path:
        return self.work / "decontamination" / "test_texts.parquet"

    def build_dir(self) -> Path:
        return self._built() / "build"

    def build_report(self) -> Path:
        return self._built() / "build.json"

    def published(self) -> Path:
        """The report of the last publish (the version it published or found unchanged)."""
        return self._built() / "published.json"

    def round_hub(self) -> Path:
        """Where an earlier round's build is published for its fine-tune to read back: never the profile's hub."""
        return self._built() / "hub"

    def round_encoder(self) -> Path:
        """The report of the encoder fine-tuned on this (earlier) round's build: the next round's guide."""
        return self._built() / "encoder.json"

    def model_dir(self, tag: str) -> Path:
        return self.home / "models" / self.profile / tag

    # ------------------------------------------------------------------------------------------- IO

    @staticmethod
    def report_path(output: Path) -> Path:
        """The JSON beside `output` (a `.json` output is its own report)."""
        return output.with_suffix(".json")

    @staticmethod
    def write_parquet(df: pl.DataFrame, path: Path) -> None:
        with atomic.atomic_path(path) as tmp:
            df.write_parquet(tmp)

    def save_report(self, report: BaseModel, output: Path, identity: StageIdentity | None = None) -> None:
        """Commit `report` beside `output` (after the output itself: see `StageReport`), naming the output it
        describes (its `atomic.identity`: mtime and size), so a report is never paired with another build's
        output; a copied home keeps it where the copy keeps times. `identity`: what a `StageReport`'s
        fingerprint was made of (required for one; recorded for `gistforge plan`)."""
        data = report.model_dump(mode="json", exclude={"reused"})
        if self.report_path(output) != output and (stamp := atomic.committed(output)):
            data[_OUTPUT] = stamp
        if isinstance(report, StageReport):  # a stage's report says what it was made of, always
            if identity is None or data.get("fingerprint") != identity.fingerprint:
                raise ValueError(f"{output.name}: a stage report is saved with the StageIdentity its fingerprint "
                                 "came from (`SPEC.identify(...)`)")
            data[_PARTS] = dict(identity.parts)
        atomic.write_text(self.report_path(output), json.dumps(data, indent=2, sort_keys=True))

    def _read(self, output: Path) -> tuple[dict[str, Any], bool]:
        """The report's fields, and whether `output` is still the one it was written for."""
        data = json.loads(self.report_path(output).read_text(encoding="utf-8"))
        data.pop(_PARTS, None)
        stamp = data.pop(_OUTPUT, None) if self.report_path(output) != output else None
        return data, stamp is None or (output.exists() and atomic.identity(output) == stamp)

    def _read_matching(self, output: Path) -> dict[str, Any]:
        """The report's fields; a `StaleOutputError` when `output` is no longer the file it describes."""
        data, matches = self._read(output)
        if not matches:
            raise StaleOutputError(f"{output} was replaced after {self.report_path(output).name} was written (two "
                                   "builds on one home at once?): materialise the stage that writes it again")
        return data

    def load_report(self, output: Path, kind: type[M]) -> M:
        path = self.report_path(output)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: materialise the stage that writes {output.name} first")
        return kind.model_validate(self._read_matching(output))

    def fingerprint_of(self, output: Path) -> str | None:
        """The committed fingerprint of an upstream output, or None when it was never made."""
        path = self.report_path(output)
        if not path.exists():
            return None
        return self._read_matching(output).get("fingerprint")

    def recorded_parts(self, output: Path) -> dict[str, Any] | None:
        """What the committed report's fingerprint was made of (None: no report, or one written before
        reports recorded it)."""
        path = self.report_path(output)
        if not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8")).get(_PARTS)

    def reuse(self, output: Path, identity: StageIdentity, kind: type[R]) -> R | None:
        """The committed report of `output` when it was made from the same inputs, so a rerun skips the work."""
        fingerprint = identity.fingerprint
        path = self.report_path(output)
        if output.exists() and path.exists():
            data, matches = self._read(output)
            try:
                report = kind.model_validate(data)
            except ValueError:  # a report of an older layout: redo the stage
                return None
            if report.fingerprint == fingerprint and matches:
                log.info("%s is up to date (fingerprint %s): reused, not redone", output.name, fingerprint)
                return report.model_copy(update={"reused": True})
        return None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the profile's build lock (an OS lock on `work/<profile>/.lock`): the build and the publish of
        one home and profile never overlap, across processes and Dagster instances alike."""
        with locks.exclusive(self.work / ".lock", f"profile {self.profile!r} in {self.home}"):
            yield


def holding_lock(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a stage `fn(ws, ...)` under `ws.lock()`."""
    @functools.wraps(fn)
    def locked(ws: Workspace, *args: Any, **kwargs: Any) -> T:
        with ws.lock():
            return fn(ws, *args, **kwargs)
    return locked
