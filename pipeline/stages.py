"""The build road, stage by stage, over files in a work folder: ingest -> mine -> build -> publish.

Each stage reads its inputs from the work folder, writes its outputs there atomically, and returns a
plain dict of facts for the caller (the Dagster layer) to record. Nothing here imports Dagster.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import polars as pl

from pipeline.accounting import RowAccount
from pipeline.build import assemble, medi_frame, per_task_counts, triplet_frame, write_build, SCHEMA
from pipeline.card import render_card
from pipeline.checks import verify_build
from pipeline.clean import clean_labelled, clean_medi
from pipeline.config import BuildConfig, TaskSource
from pipeline.embed import EmbeddingCache, embed_texts, fingerprint, load_encoder, resolve_model
from pipeline import atomic, decontaminate, faults
from pipeline.mine import mine_triplets
from pipeline.plots import similarity_histogram
from pipeline.search import flat_index, search
from pipeline.publish import LocalHub, PublishResult
from pipeline.registry import get_task
from pipeline.sources import hub_snapshot, describe_medi_source, describe_task_source, load_medi, load_task_split

log = logging.getLogger(__name__)


def default_home() -> Path:
    return Path(os.environ.get("GISTFORGE_HOME", ".gistforge")).resolve()


@dataclass(frozen=True)
class Workspace:
    """Where a profile's intermediate files, embedding cache and local hub live."""

    home: Path
    profile: str

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
        return self.work / "triplets" / f"{task}.parquet"

    def report(self, path: Path) -> Path:
        return path.with_suffix(".json")

    def build_dir(self) -> Path:
        return self.work / "build"

    def test_texts(self) -> Path:
        return self.work / "decontamination" / "test_texts.parquet"


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        df.write_parquet(tmp)


def _write_json(data: dict, path: Path) -> None:
    atomic.write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


STAGE_VERSION = "1"  # bump when a stage's output changes for the same inputs


def _fingerprint(*parts) -> str:
    """What a stage's output depends on: its settings, its sources' identities and its inputs' fingerprints."""
    blob = json.dumps([STAGE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _reusable(out: Path, fingerprint: str) -> dict | None:
    """The committed report of `out` when it was made from the same inputs, so a rerun does not redo it.

    The report is written after its output, so a report on disk means the output is complete.
    """
    report_path = out.with_suffix(".json")
    if out.exists() and report_path.exists():
        report = _read_json(report_path)
        if report.get("fingerprint") == fingerprint:
            log.info("%s is up to date (fingerprint %s): reused, not redone", out.name, fingerprint)
            return {**report, "reused": True}
    return None


def _source_identity(kind: str, hub: tuple[str, str, Path | None] | None, path: Path | None) -> dict:
    """A source's identity: the resolved Hub commit (a branch name moves; the commit does not), or a file's
    path, size and modification time."""
    if kind == "hub" and hub is not None:
        repo_id, revision, cache_dir = hub
        return {"hub": repo_id, "commit": hub_snapshot(repo_id, revision, cache_dir,
                                                       local_files_only=cache_dir is not None).name}
    if path is None:
        return {}
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _task_identity(src: TaskSource) -> dict:
    hub = None
    if src.kind != "local":
        task = get_task(src.name)
        hub = (task.hub_id, src.revision or task.revision, src.cache_dir)
    test = _source_identity("local", None, src.test_path) if src.kind == "local" and src.test_path else {}
    return {"config": src.model_dump(mode="json"), "source": _source_identity(src.kind, hub, src.path), "test": test}


def _fingerprint_of(path: Path) -> str | None:
    report = path.with_suffix(".json")
    return _read_json(report).get("fingerprint") if report.exists() else None


def collect_test_texts(cfg: BuildConfig, ws: Workspace) -> dict:
    """The decontamination reference: every included task's test texts with their normalised keys."""
    fp = _fingerprint("test_texts", [_task_identity(src) for src in cfg.included_tasks])
    if (done := _reusable(ws.test_texts(), fp)) is not None:
        return done
    df = decontaminate.collect_test_texts(cfg)
    df = df.with_columns(key=pl.Series(decontaminate.text_keys(df.get_column("text")), dtype=pl.UInt64))
    _write_parquet(df, ws.test_texts())
    report = {"test_texts": df.height, "per_task": dict(df.group_by("task").len().sort("task").iter_rows()),
              "fingerprint": fp}
    _write_json(report, ws.report(ws.test_texts()))
    return report


def _test_keys(cfg: BuildConfig, ws: Workspace):
    if not cfg.decontamination.exact:
        return None
    if not ws.test_texts().exists():
        raise FileNotFoundError(f"decontamination reference {ws.test_texts()} is missing: materialise "
                                "`mteb_test_texts` first (or set decontamination.exact: false)")
    return pl.read_parquet(ws.test_texts(), columns=["key"]).get_column("key").unique().to_numpy()


def ingest_medi(cfg: BuildConfig, ws: Workspace, guide: Callable[[], "GuideEncoder"] | None = None) -> dict:
    """Load and clean MEDI; an empty frame when the profile has no MEDI source.

    `guide` (a factory, so the model loads only when needed) runs the near-duplicate pass against every
    included task's test texts when `decontamination.near_duplicate_threshold` is set.
    """
    medi = cfg.medi
    fp = _fingerprint("medi", medi and medi.model_dump(mode="json"),
                      medi and _source_identity(medi.kind, (medi.repo_id, medi.revision, medi.cache_dir), medi.path),
                      cfg.decontamination.model_dump(), _fingerprint_of(ws.test_texts()),
                      cfg.decontamination.near_duplicate_threshold and [cfg.guide_model, cfg.guide_revision])
    if (done := _reusable(ws.medi_rows(), fp)) is not None:
        return done
    if medi is None:
        df, acc = clean_medi(pl.DataFrame(schema={c: pl.String for c in
                                                  ["query", "pos", "neg", "task_name", "query_instruct",
                                                   "pos_instruct", "neg_instruct"]}), "MEDI (none configured)")
    else:
        df, acc = clean_medi(load_medi(medi), "MEDI", _test_keys(cfg, ws))
    threshold = cfg.decontamination.near_duplicate_threshold
    if threshold is not None and df.height and guide is not None and ws.test_texts().exists():
        tests = pl.read_parquet(ws.test_texts()).get_column("text").unique().to_list()
        texts = pl.concat([df.get_column(c) for c in ("query", "pos", "neg")]).unique()
        near = texts.filter(pl.Series(_near_test(guide(), texts.to_list(), tests, threshold, cfg.mining.query_batch)))
        flagged = pl.any_horizontal(pl.col(c).is_in(near) for c in ("query", "pos", "neg"))
        keep = ~df.select(flagged).to_series().to_numpy()
        acc.drop("test_near_duplicate", int((~keep).sum()))
        acc.rows_out -= int((~keep).sum())
        acc.check()
        df = df.filter(pl.Series(keep))
    _write_parquet(df, ws.medi_rows())
    report = {"account": acc.to_dict(), "tasks": df.get_column("task_name").n_unique(), "fingerprint": fp}
    _write_json(report, ws.report(ws.medi_rows()))
    return report


def _near_test(guide: "GuideEncoder", texts: list[str], tests: list[str], threshold: float, batch: int) -> np.ndarray:
    """Mask of texts whose guide similarity to their nearest test text reaches `threshold`."""
    if not texts or not tests:
        return np.zeros(len(texts), dtype=bool)
    emb, _ = guide.embed(texts)
    test_emb, _ = guide.embed(tests)
    sim, _ = search(flat_index(test_emb), emb, 1, batch)
    return sim[:, 0] >= threshold


def ingest_task(cfg: BuildConfig, ws: Workspace, task: str) -> dict:
    """Load and clean one task's train split. Excluded tasks are refused, never read."""
    if task in cfg.exclusions:
        raise ValueError(f"task {task!r} is excluded ({cfg.exclusions[task]}); it is never ingested")
    src = cfg.task(task)
    fp = _fingerprint("split", _task_identity(src), cfg.decontamination.exact, _fingerprint_of(ws.test_texts()))
    if (done := _reusable(ws.split(task), fp)) is not None:
        return done
    df, acc = clean_labelled(load_task_split(src), f"{task} (ingest)", _test_keys(cfg, ws))
    faults.point("ingest")
    _write_parquet(df, ws.split(task))
    report = {"account": acc.to_dict(), "labels": df.get_column("label").n_unique(),
              "source": describe_task_source(src), "fingerprint": fp}
    _write_json(report, ws.report(ws.split(task)))
    return report


class GuideEncoder:
    """The guide model, loaded once per process, with its embedding cache."""

    def __init__(self, cfg: BuildConfig, ws: Workspace, device: str | None = None):
        self.ref = resolve_model(cfg.guide_model, cfg.guide_revision)
        self.model = load_encoder(self.ref, device)
        self.key = fingerprint(self.ref, self.model.max_seq_length)
        self.cache = EmbeddingCache(ws.embeddings, self.key)
        self.batch_size = cfg.encode_batch_size

    def embed(self, texts: list[str]):
        return embed_texts(self.model, texts, self.cache, self.batch_size)


def mine_task(cfg: BuildConfig, ws: Workspace, task: str, guide: GuideEncoder | Callable[[], GuideEncoder]) -> dict:
    """Embed a cleaned split with the guide and mine its triplets.

    `guide` may be a factory, so that a rerun that finds the triplets up to date never loads the model.
    """
    threshold = cfg.decontamination.near_duplicate_threshold
    ref = resolve_model(cfg.guide_model, cfg.guide_revision)  # resolved revision, without loading the model
    fp = _fingerprint("triplets", _fingerprint_of(ws.split(task)), cfg.mining.model_dump(), cfg.seed,
                      [ref.name, ref.revision], cfg.encode_batch_size, threshold,
                      threshold is not None and _fingerprint_of(ws.test_texts()))
    if (done := _reusable(ws.triplets(task), fp)) is not None:
        return done
    guide = guide if isinstance(guide, GuideEncoder) else guide()
    split = pl.read_parquet(ws.split(task))
    src = cfg.task(task)
    acc = RowAccount(source=f"{task} (mine)", rows_in=split.height)
    emb, enc_stats = guide.embed(split.get_column("text").to_list())
    faults.point("embed")
    if threshold is not None and ws.test_texts().exists():
        tests = pl.read_parquet(ws.test_texts()).filter(pl.col("task") == task).get_column("text").to_list()
        keep = ~_near_test(guide, split.get_column("text").to_list(), tests, threshold, cfg.mining.query_batch)
        acc.drop("test_near_duplicate", int((~keep).sum()))
        split, emb = split.filter(pl.Series(keep)), emb[keep]
    codes = split.get_column("label").cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    mined = mine_triplets(emb, codes, cfg.mining, cfg.seed, task)
    frame = triplet_frame(split, mined, src)
    acc.rows_out = mined.stats.get("queries_with_triplet", 0)
    for reason, n in mined.stats.get("drops", {}).items():
        acc.drop(reason, n)
    acc.check()
    faults.point("mine")
    _write_parquet(frame, ws.triplets(task))
    plot = similarity_histogram(mined.pos_score, mined.neg_score, f"{task}: guide similarity",
                                ws.triplets(task).with_suffix(".png"))
    report = {"account": acc.to_dict(), "mining": mined.stats, "encode": vars(enc_stats), "plot": str(plot),
              "guide": {"name": guide.ref.name, "revision": guide.ref.revision, "fingerprint": guide.key},
              "fingerprint": fp}
    _write_json(report, ws.report(ws.triplets(task)))
    return report


def build_dataset(cfg: BuildConfig, ws: Workspace) -> dict:
    """Assemble MEDI + every included task's triplets into shards and a card, atomically."""
    frames = [medi_frame(pl.read_parquet(ws.medi_rows()))]
    medi_report = _read_json(ws.report(ws.medi_rows()))
    accounts = [medi_report["account"]]
    sources = {"medi": describe_medi_source(cfg.medi) if cfg.medi else None, "tasks": []}
    guide = None
    for src in cfg.included_tasks:
        path = ws.triplets(src.name)
        if not path.exists():
            raise FileNotFoundError(f"no mined triplets for task {src.name!r} at {path}; materialise its partition first")
        frames.append(pl.read_parquet(path))
        ingest, mined = _read_json(ws.report(ws.split(src.name))), _read_json(ws.report(path))
        accounts += [ingest["account"], mined["account"]]
        sources["tasks"].append(ingest["source"])
        guide = mined["guide"]
    table = assemble(frames, cfg.seed)
    tasks = per_task_counts(table)
    decontam = _read_json(ws.report(ws.test_texts())) if ws.test_texts().exists() else None
    card = functools.partial(
        render_card, decontamination={"config": cfg.decontamination.model_dump(), "reference": decontam}, repo_id=cfg.dataset_repo_id, schema=SCHEMA, num_rows=table.num_rows, num_bytes=table.nbytes,
        sources=sources, exclusions=cfg.exclusions,
        guide=guide or {"name": cfg.guide_model, "revision": cfg.guide_revision or "n/a"},
        mining=cfg.mining.model_dump(), seed=cfg.seed, tasks=tasks, accounts=accounts,
    )
    digest = write_build(table, lambda size: card(download_size=size), ws.build_dir(), cfg.max_shard_bytes)
    shards = sorted(p.name for p in (ws.build_dir() / "data").glob("*.parquet"))
    keys = _test_keys(cfg, ws) if cfg.decontamination.exact else None
    checks = verify_build(ws.build_dir(), cfg.exclusions, accounts, keys)
    return {"content_hash": digest, "rows": table.num_rows, "shards": shards, "tasks": tasks,
            "accounts": accounts, "excluded": cfg.exclusions, "checks": checks}


class Publisher(Protocol):
    def publish(self, build_dir: Path, repo_id: str) -> PublishResult: ...


def publish(cfg: BuildConfig, ws: Workspace, publisher: Publisher | None = None) -> PublishResult:
    """Publish the current build; the local hub in the workspace unless another publisher is given."""
    return (publisher or LocalHub(ws.hub)).publish(ws.build_dir(), cfg.dataset_repo_id)


def finetune(cfg: BuildConfig, ws: Workspace, tag: str, location: str, publisher=None) -> dict:
    """Fine-tune the base encoder on published version `tag` and score base vs fine-tuned on the test splits."""
    from sentence_transformers import SentenceTransformer

    from pipeline import train

    tc = cfg.training
    ds = train.load_published(cfg.dataset_repo_id, tag, None if location == "hub" else location)
    base = resolve_model(cfg.base_model or cfg.guide_model)
    guide = resolve_model(cfg.guide_model, cfg.guide_revision)
    out = ws.home / "models" / cfg.profile / tag
    facts = train.train_encoder(train.task_datasets(ds, tc), base.path, guide.path, out, tc)
    model_dir = out / "model"
    facts["model"].save(str(model_dir))

    splits = []
    for src in cfg.included_tasks:
        test = decontaminate.load_test_split(src)
        if test is None or not ws.split(src.name).exists():
            continue
        tr = pl.read_parquet(ws.split(src.name)).head(tc.probe_train_rows)
        te = test.filter(pl.col("text").is_not_null()).head(tc.probe_test_rows)
        splits.append(train.EvalSplit(src.name, tr["text"].to_list(), tr["label"].to_list(),
                                      te["text"].to_list(), te["label"].to_list()))
    evaluation = {"base": train.probe_scores(SentenceTransformer(base.path, device="cpu"), splits),
                  "finetuned": train.probe_scores(SentenceTransformer(str(model_dir), device="cpu"), splits)}
    card = model_dir / "README.md"
    section = train.model_card_section(dataset_repo=cfg.dataset_repo_id, tag=tag, guide=f"{guide.name}@{guide.revision}",
                                       base=f"{base.name}@{base.revision}", cfg=tc, facts=facts, evaluation=evaluation)
    card.write_text((card.read_text(encoding="utf-8") if card.exists() else "") + section, encoding="utf-8")
    report = {"model_dir": str(model_dir), "tag": tag, "global_step": facts["global_step"],
              "resumed_from": facts["resumed_from"], "train_loss": facts["train_loss"], "device": facts["device"],
              "evaluation": evaluation}
    if tc.push_model_repo:
        pushed = (publisher or LocalHub(ws.hub)).publish_model(model_dir, tc.push_model_repo, tag)
        report["model_repo"] = {"repo_id": pushed.repo_id, "tag": pushed.tag, "revision": pushed.revision,
                                "location": pushed.location}
    _write_json(report, out / "report.json")
    return report
