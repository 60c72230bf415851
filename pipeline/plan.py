"""What the next build would reuse and redo, computed by the stages themselves.

`plan_build` calls every stage function exactly as the assets do, on a `PlanningWorkspace`: a workspace
whose `reuse` (the call every stage makes once it has its fingerprint, before any work) decides with the
stage's own rule (`Workspace.reuse`), records the answer and stops the stage there. So the plan uses the
very fingerprints the stages compute (sources resolved, settings, upstream fingerprints) and no second copy
of the rules; nothing is read from a source beyond what its fingerprint needs, and nothing is written.
Why a stage would be redone is the difference between the parts its report recorded
(`Workspace.recorded_parts`) and the parts it would hash now.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

from pydantic import BaseModel

from pipeline.config import BuildConfig
from pipeline.workspace import StageIdentity, StageReport, Workspace

if TYPE_CHECKING:  # the stages load torch and faiss: `gistforge plan` imports them only when it plans
    from pipeline.road.stages import Road

log = logging.getLogger(__name__)

Status = Literal["reuse", "redo", "fails"]


class StagePlan(BaseModel):
    """One stage (one partition of it): what the next build would do with it, and why."""

    asset: str
    partition: str | None = None
    status: Status
    reasons: list[str] = []
    fingerprint: str | None = None

    @property
    def key(self) -> str:
        return f"{self.asset}[{self.partition}]" if self.partition else self.asset


class BuildPlan(BaseModel):
    profile: str
    stages: list[StagePlan]

    @property
    def redo(self) -> list[str]:
        return [s.key for s in self.stages if s.status == "redo"]

    @property
    def fails(self) -> list[str]:
        return [s.key for s in self.stages if s.status == "fails"]


class _Planned(Exception):
    """Raised inside a stage at its `reuse` call: the stage stops before doing any work."""

    def __init__(self, output: Path, identity: StageIdentity, reused: bool):
        super().__init__(output)
        self.output, self.identity, self.reused = output, identity, reused


@dataclass(frozen=True)
class PlanningWorkspace(Workspace):
    """A workspace on which a stage only decides: reuse or redo. Outputs already planned answer
    `fingerprint_of` with the fingerprint they would have after the build, as they would by then."""

    planned: dict[Path, str] = field(default_factory=dict, compare=False)

    def reuse(self, output: Path, identity: StageIdentity, kind: type) -> Any:
        done = Workspace.reuse(self, output, identity, kind)  # the stage's own rule
        self.planned[output] = identity.fingerprint
        raise _Planned(output, identity, done is not None)

    def fingerprint_of(self, output: Path) -> str | None:
        if output in self.planned:
            return self.planned[output]
        return Workspace.fingerprint_of(self, output)

    @contextmanager
    def lock(self) -> Iterator[None]:
        yield  # planning writes nothing: it never waits for a running build


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def why_redo(ws: Workspace, output: Path, identity: StageIdentity, upstream: dict[str, str]) -> list[str]:
    """What differs between the recorded report and what the stage would hash now; `upstream` maps the
    fingerprint of every stage that will be redone to its name."""
    if not output.exists() or not ws.report_path(output).exists():
        shown = output.relative_to(ws.work) if output.is_relative_to(ws.work) else output
        return [f"never made (no {shown})"]
    old, new = ws.recorded_parts(output), identity.parts
    if old is None:
        return ["fingerprint changed (the report predates recorded fingerprint parts)"]
    reasons = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "version":
            reasons.append(f"stage version {a} -> {b}")
        elif isinstance(b, str) and b in upstream:
            reasons.append(f"input {upstream[b]} is redone")
        else:
            what = "setting" if key.startswith("settings.") else "input"
            reasons.append(f"{what} {key.split('.', 1)[1]}: {_short(a)} -> {_short(b)}")
    return reasons or ["the output no longer matches its report (changed or replaced since)"]


class _Planner:
    def __init__(self, ws: PlanningWorkspace):
        self.ws, self.stages, self.redone = ws, [], {}

    def stage(self, asset: str, run: Callable[[], Any], partition: str | None = None,
              after: list[StagePlan] = ()) -> StagePlan:
        """Run one stage function until its `reuse` call; a stage that fails before it (a source missing from
        the cache, say) is planned as failing, with its message, and so is every stage `after` one that fails."""
        if failing := [s.key for s in after if s.status == "fails"]:
            plan = StagePlan(asset=asset, partition=partition, status="fails",
                             reasons=[f"blocked: {', '.join(failing)} fails"])
            self.stages.append(plan)
            return plan
        try:
            run()
        except _Planned as p:
            if p.reused:
                plan = StagePlan(asset=asset, partition=partition, status="reuse", fingerprint=p.identity.fingerprint)
            else:
                plan = StagePlan(asset=asset, partition=partition, status="redo", fingerprint=p.identity.fingerprint,
                                 reasons=why_redo(self.ws, p.output, p.identity, self.redone))
                self.redone[p.identity.fingerprint] = plan.key
        except Exception as exc:  # noqa: BLE001 - the build would fail here: say so, and plan on
            plan = StagePlan(asset=asset, partition=partition, status="fails",
                             reasons=[f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"])
        else:
            raise RuntimeError(f"{asset}: the stage finished without asking to reuse its output")
        self.stages.append(plan)
        return plan

    def derived(self, asset: str, status: Status, reasons: list[str], partition: str | None = None) -> StagePlan:
        plan = StagePlan(asset=asset, partition=partition, status=status, reasons=reasons)
        self.stages.append(plan)
        return plan


def plan_build(ws: Workspace, cfg: BuildConfig, *, guide_device: str | None = None,
               tasks: list[str] | None = None, finetune: bool = True,
               published: Callable[[], tuple[dict[str, str], str | None]] | None = None,
               location: Any = None) -> BuildPlan:
    """The plan of `gistforge build` with `cfg` on `ws`: every stage in build order.

    `published()` gives the versions already published (content hash -> tag) and the tag `main` points at;
    `location` is where they are (`pipeline.road.publish.Location`), for the fine-tune's fingerprint.
    """
    from pipeline.road.build import last_build
    from pipeline.road.stages import Road

    last = cfg.mining.rounds
    road = Road(cfg, PlanningWorkspace(ws.home, ws.profile).at_round(last, last), guide_device)
    planner = _Planner(road.ws)
    never = _never_loaded
    reference = planner.stage("mteb_test_texts", road.test_texts)
    planner.stage("medi_triplets", lambda: road.medi(never), after=[reference])
    names = tasks or [t.name for t in cfg.included_tasks]
    splits = {}
    for name in names:
        splits[name] = planner.stage("mteb_train_split", lambda: road.split(name), partition=name, after=[reference])
        planner.stage("mined_triplets", lambda: road.mine(name, never), partition=name, after=[splits[name]])
    for r in range(2, last + 1):
        _plan_round(planner, road, r, names, splits)

    upstream = [s.key for s in planner.stages if s.status != "reuse"]
    failing = [s.key for s in planner.stages if s.status == "fails" and not s.reasons[0].startswith("blocked")]
    content = None
    if failing:
        for asset in ("triplet_dataset", "published_dataset", "finetuned_encoder"):
            planner.derived(asset, "fails", [f"blocked: {', '.join(failing)} fails"])
        return BuildPlan(profile=cfg.profile, stages=planner.stages)
    if upstream:
        planner.derived("triplet_dataset", "redo", [f"input {k} is redone" for k in upstream])
    else:
        try:
            content = last_build(ws).content_hash
            planner.derived("triplet_dataset", "reuse",
                            [f"reassembled from the same inputs: the same content {content[:12]}"])
        except (FileNotFoundError, ValueError) as exc:
            planner.derived("triplet_dataset", "redo", [f"never made ({str(exc).splitlines()[0]})"])
    versions, main = published() if published else ({}, None)
    tag = versions.get(content) if content else None
    if tag:
        planner.derived("published_dataset", "reuse", [f"content {content[:12]} is already published as {tag}"])
    else:
        why = ["triplet_dataset is redone: a new version if its content changes"] if content is None else \
            [f"content {content[:12]} is not published yet"]
        planner.derived("published_dataset", "redo", why)
    if finetune:
        _plan_finetune(planner, road, main if tag else None, location)
    return BuildPlan(profile=cfg.profile, stages=planner.stages)


def _plan_round(planner: _Planner, road: Road, r: int, names: list[str], splits: dict[str, StagePlan]) -> None:
    """Round r > 1 of `mining.rounds`: round r-1's encoder trains on round r-1's build, which is known only when
    everything it is built from is reused (then it is the build recorded last time); round r mines with that
    encoder, whose revision is known only when its training is reused."""
    from pipeline.road import rounds
    from pipeline.road.local_hub import LocalHub
    from pipeline.road.publish import last_published

    prev = road.round(r - 1)
    encoder = rounds.encoder_asset(r - 1)
    if failing := [s.key for s in planner.stages if s.status == "fails"]:
        enc = planner.derived(encoder, "fails", [f"blocked: {', '.join(failing)} fails"])
    elif redone := [s.key for s in planner.stages if s.status == "redo"]:
        enc = planner.derived(encoder, "redo", [f"input {k} is redone" for k in redone])
    else:
        try:
            built = last_published(prev)
        except (FileNotFoundError, ValueError) as exc:
            enc = planner.derived(encoder, "redo", [f"never made ({str(exc).splitlines()[0]})"])
        else:
            enc = planner.stage(encoder, lambda: road.finetune(built.tag, LocalHub(prev.round_hub()).location, r - 1))
    guide_ref = None
    if enc.status == "reuse":
        try:
            guide_ref = road.guide_ref(r)
        except (FileNotFoundError, ValueError) as exc:  # trained, but killed before its report was saved
            enc.status, enc.reasons = "redo", [f"never made ({str(exc).splitlines()[0]})"]
    for name in names:
        asset = rounds.mined_asset(r)
        if guide_ref is not None:
            planner.stage(asset, lambda: road.mine(name, _never_loaded, r), partition=name, after=[splits[name]])
        elif enc.status == "fails":
            planner.derived(asset, "fails", [f"blocked: {enc.key} fails"], partition=name)
        else:
            planner.derived(asset, "redo", [f"input {enc.key} is redone: a new guide"], partition=name)


def _plan_finetune(planner: _Planner, road: Road, tag: str | None, location: Any) -> None:
    """The fine-tune trains on the version `main` points at after the publish: known only when the publish
    is reused (then `main` stays where it is)."""
    if tag is None:
        planner.derived("finetuned_encoder", "redo", ["published_dataset would publish a new version to train on"])
        return
    from pipeline.road.train import TrainReport

    trained = planner.stage("finetuned_encoder", lambda: road.finetune(tag, location))
    if trained.status == "fails":
        return
    model_dir = road.ws.model_dir(tag) / "model"
    report = TrainReport.model_construct(fingerprint=trained.fingerprint, model_dir=str(model_dir))
    planner.stage("finetuned_encoder (evaluation)", lambda: road.evaluate(report))


def _never_loaded(*_: Any) -> StageReport:
    raise RuntimeError("planning never loads a model")
