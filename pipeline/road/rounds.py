"""Re-mining with the trained encoder (`mining.rounds`), ANCE-style: round r > 1 mines every task again with
the encoder fine-tuned on round r-1's data as its guide, so the negatives are hard for the model being
trained, not only for the starting guide (ANCE, Xiong et al., ICLR 2021, refreshes them from the model in
training; C-Pack's BGE fine-tuning mines its hard negatives following it). Only the last round is published;
each earlier round's build is published to a hub of its own inside the workspace (`Workspace.round_hub`),
where its fine-tune reads it back as any trainer would, and the published card records every round's guide.

A round's guide is named by its files' digest, so round r's embedding cache and mining fingerprint follow the
fine-tuned weights, and a rerun that retrains nothing mines nothing again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.config import BuildConfig
from pipeline.road import build, train
from pipeline.road.local_hub import LocalHub
from pipeline.road.model_ref import ModelRef, folder_digest, public_model_name, resolve_model
from pipeline.road.publish import publish
from pipeline.workspace import StageReport, StageSpec, Workspace

log = logging.getLogger(__name__)

SPEC = StageSpec("round_encoder", version="1")


def mined_asset(r: int) -> str:
    """The Dagster asset that mines round `r` (round 1 is the one-round build's own `mined_triplets`)."""
    return "mined_triplets" if r == 1 else f"round{r}_mined_triplets"


def encoder_asset(r: int) -> str:
    """The Dagster asset that fine-tunes round `r`'s encoder, the guide of round r+1."""
    return f"round{r}_encoder"


class RoundFailed(RuntimeError):
    """An earlier round's build failed a check: its data would train the next round's guide."""


class RoundEncoder(StageReport):
    """The encoder fine-tuned on one round's build: what guides the next round."""

    round: int
    content_hash: str  # the round's build, as published to its own hub
    rows: int
    tag: str
    guide: ModelRef  # the fine-tuned encoder as the next round loads it
    train_loss: float
    global_step: int
    reused_training: bool


def round_guide(ws: Workspace, cfg: BuildConfig, r: int) -> ModelRef:
    """Round `r`'s guide: the configured one for round 1, else the encoder fine-tuned on round r-1."""
    if r == 1:
        return resolve_model(cfg.guide_model, cfg.guide_revision)
    prev = ws.at_round(r - 1, cfg.mining.rounds)
    return ws.load_report(prev.round_encoder(), RoundEncoder).guide


def train_round(ws: Workspace, cfg: BuildConfig) -> RoundEncoder:
    """Build round `ws.round` (MEDI + its triplets, with the build's checks), publish it to the round's own hub,
    and fine-tune the base encoder on it with `cfg.training` (reused when that version and the settings were
    trained on before)."""
    if ws.final:
        raise ValueError(f"round {ws.round} is the last round: its build is the published one, not a guide's")
    built = build.build_dataset(ws, cfg)
    if failed := [c for c in built.checks if not c.passed]:
        raise RoundFailed(f"round {ws.round}'s build failed check(s) {', '.join(c.name for c in failed)}: "
                          f"{failed[0].description}")
    version = publish(ws, cfg.dataset_repo_id, LocalHub(ws.round_hub()))
    trained = train.finetune_on(ws, cfg, version.tag, version.location)
    guide = fine_tuned_ref(Path(trained.model_dir), public_model_name(cfg.base_model or cfg.guide_model), ws.round)
    ident = SPEC.identify({}, {"model": trained.fingerprint, "weights": guide.revision})
    report = RoundEncoder(round=ws.round, content_hash=version.content_hash, rows=built.rows, tag=version.tag,
                          guide=guide, train_loss=trained.facts.train_loss, global_step=trained.facts.global_step,
                          reused_training=trained.reused, fingerprint=ident.fingerprint)
    ws.save_report(report, ws.round_encoder(), ident)
    log.info("round %d: %s rows (%s), encoder %s@%s", ws.round, built.rows, version.content_hash[:12], guide.name,
             guide.revision)
    return report


def fine_tuned_ref(model_dir: Path, base: str, r: int) -> ModelRef:
    """A fine-tuned encoder as a guide: named for what it is, its revision the digest of its files but the model
    card sentence-transformers writes (it holds the training's wall time, so a retrain to the same weights would
    otherwise name a new guide)."""
    return ModelRef(f"{base} fine-tuned on round {r}", str(model_dir),
                    f"local-{folder_digest(model_dir, exclude=frozenset({'README.md'}))}")
