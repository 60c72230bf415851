"""The road's stages called with one build configuration's settings: the one wiring that the Dagster assets,
`gistforge plan`, the tests and the benchmarks share, so which setting a stage takes is written once.

A `Road` loads no model: mining and MEDI's near-duplicate pass take a `guide` factory (the assets' is the
guide resource's cached encoder), called only when the stage really runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.config import BuildConfig
from pipeline.road import build, decontaminate, evaluate, ingest, mine, publish, rounds, train
from pipeline.road.embed import GuideEncoder
from pipeline.road.model_ref import ModelRef
from pipeline.road.precision import resolve_precision
from pipeline.road.publish import Location, Publisher, PublishResult
from pipeline.workspace import Workspace

Guide = Callable[[ModelRef], GuideEncoder]


@dataclass(frozen=True)
class Road:
    cfg: BuildConfig
    ws: Workspace  # the last mining round's view: its build is the published one
    device: str | None = None  # the guide's device (None: CUDA when present, else the CPU)

    @classmethod
    def at_home(cls, cfg: BuildConfig, home: Path, device: str | None = None) -> "Road":
        last = cfg.mining.rounds
        return cls(cfg, Workspace(Path(home), cfg.profile).at_round(last, last), device)

    def round(self, r: int) -> Workspace:
        """The workspace as mining round `r` sees it."""
        return self.ws.at_round(r, self.cfg.mining.rounds)

    @property
    def precision(self) -> str:
        """The arithmetic the guide encodes in on this device (part of the mining fingerprint)."""
        return resolve_precision(self.cfg.guide_precision, self.device)

    def guide_ref(self, r: int = 1) -> ModelRef:
        """Round `r`'s guide, without loading it: the configured model, or round r-1's fine-tuned encoder."""
        return rounds.round_guide(self.round(r), self.cfg, r)

    def guide_encoder(self, ref: ModelRef | None = None) -> GuideEncoder:
        """A guide loaded now, uncached (the assets share one per process through their resource instead)."""
        cfg = self.cfg
        return GuideEncoder(cfg.guide_model, cfg.guide_revision, self.ws.embeddings, cfg.encode_batch_size,
                            self.device, precision=cfg.guide_precision, ref=ref)

    def test_texts(self) -> decontaminate.ReferenceReport:
        return decontaminate.collect_test_texts(self.ws, self.cfg.included_tasks, self.cfg.network)

    def medi(self, guide: Guide | None = None) -> ingest.MediReport:
        ref, load = self.guide_ref(), guide or self.guide_encoder
        return ingest.ingest_medi(self.ws, self.cfg.medi, self.cfg.decontamination,
                                  guide=ref.identity(self.precision), embed=lambda: load(ref).vectors,
                                  network=self.cfg.network)

    def split(self, task: str) -> ingest.SplitReport:
        return ingest.ingest_task(self.ws, self.cfg.task(task), self.cfg.decontamination, self.cfg.exclusions,
                                  self.cfg.network)

    def mine(self, task: str, guide: Guide | None = None, r: int = 1, ref: ModelRef | None = None) -> mine.MineReport:
        """One task's triplets in mining round `r`; `ref`: another guide than the round's own (a benchmark's)."""
        cfg, ref, load = self.cfg, ref or self.guide_ref(r), guide or self.guide_encoder
        return mine.mine_task(self.round(r), cfg.task(task), mining=cfg.mining, seed=cfg.seed,
                              decontamination=cfg.decontamination, guide_ref=ref, precision=self.precision,
                              guide=lambda: load(ref), clean=cfg.clean)

    def build(self) -> build.BuildReport:
        return build.build_dataset(self.ws, self.cfg)

    def publish(self, publisher: Publisher) -> PublishResult:
        """The build, published as a version of the config's dataset repo (or found already published)."""
        return publish.publish(self.ws, self.cfg.dataset_repo_id, publisher)

    def train_round(self, r: int) -> rounds.RoundEncoder:
        """Round `r`'s build, published to its own hub, and the encoder fine-tuned on it (round r+1's guide)."""
        return rounds.train_round(self.round(r), self.cfg)

    def finetune(self, tag: str, location: Location, r: int | None = None) -> train.TrainReport:
        """The encoder fine-tuned on version `tag` at `location` (`r`: an earlier round's build, in its own hub)."""
        return train.finetune_on(self.ws if r is None else self.round(r), self.cfg, tag, location)

    def evaluate(self, trained: train.TrainReport) -> evaluate.EvalReport:
        return evaluate.evaluate_finetune(self.ws, trained, self.cfg.included_tasks, self.cfg.training)
