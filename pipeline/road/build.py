"""Assemble MEDI rows and mined triplets into the published schema and write Hub-style shards.

Rows are grouped by task (GIST's trainer skips batches that mix tasks) and shuffled deterministically
within each task; the same inputs, config and seed give byte-identical shards and card.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Callable

import polars as pl
import pyarrow as pa
from pydantic import BaseModel

from pipeline import task_types
from pipeline.common import atomic, faults
from pipeline.common.accounting import RowAccount
from pipeline.config import BuildConfig
from pipeline.road import clean, decontaminate, layout, miner
from pipeline.road.grouped import TaskGrouped, TaskRows
from pipeline.road.card import MiningOutcome, MiningRound, licenses_md, render_card, top_license
from pipeline.road.checks import CheckOutcome, verify_build
from pipeline.road.model_ref import public_model_name
from pipeline.road.facts import FACTS, SourceRows, VersionFacts
from pipeline.road.ingest import MediReport, SplitReport
from pipeline.road.mine import MineReport
from pipeline.schema import PL_SCHEMA, SCHEMA, TRIPLET_COLUMNS, TRIPLETS_ARROW
from pipeline.workspace import StageSpec, Workspace, holding_lock


def medi_frame(medi: pl.DataFrame) -> pl.DataFrame:
    """MEDI rows in the published schema; `symmetric` = same instruction on query and positive."""
    return medi.select(
        "query", "pos", "neg", "task_name",
        task_type=pl.lit(task_types.MEDI),
        query_instruct="query_instruct", pos_instruct="pos_instruct", neg_instruct="neg_instruct",
        symmetric=pl.col("query_instruct") == pl.col("pos_instruct"),
        source=pl.lit("medi"),
        query_label=pl.lit(None, pl.String), neg_label=pl.lit(None, pl.String),
        pos_score=pl.lit(None, pl.Float32), neg_score=pl.lit(None, pl.Float32),
    ).cast(PL_SCHEMA)


def assemble(frames: list[pl.DataFrame], seed: int) -> TaskGrouped:
    """The rows grouped by (task_type, task_name) and shuffled within each task by a seeded permutation.
    Consumes `frames`; see `grouped` for why the order is not applied until the shards are written."""
    return TaskGrouped.of(frames, seed)


def triplet_inputs(triplets: TaskGrouped, start: int, stop: int) -> pa.Table:
    """Rows [start, stop) of the `triplets` config: the default's rows as `anchor, positive, negative` only."""
    return triplets.rows(start, stop, list(TRIPLET_COLUMNS)).rename_columns(TRIPLETS_ARROW.names).cast(TRIPLETS_ARROW)


def content_hash(folder: Path) -> str:
    """sha256 over every file's path and bytes, in path order, hidden paths aside: the build's identity."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)):
        h.update(path.relative_to(folder).as_posix().encode() + b"\x00")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


IDENTITY_COLUMNS = ["task_name", "task_type", "query", "pos", "neg", "query_instruct", "pos_instruct", "neg_instruct"]


def row_hashes(table: pa.Table, chunk: int = 65_536) -> pl.DataFrame:
    """(task_type, task_name, 64-bit blake2b of the row's training content): what version diffs compare.
    A chunk of rows at a time: the joined content of a full build would be several GB."""
    parts = []
    for start in range(0, table.num_rows, chunk):
        df = pl.from_arrow(table.slice(start, chunk).select(IDENTITY_COLUMNS))
        joined = df.select(pl.concat_str([pl.col(c).fill_null("") for c in IDENTITY_COLUMNS], separator="\x1f"))[:, 0]
        digests = [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in joined]
        parts.append(pl.DataFrame({"task_type": df["task_type"], "task_name": df["task_name"],
                                   "row_hash": pl.Series(digests, dtype=pl.UInt64)}))
    return pl.concat(parts) if parts else pl.DataFrame(schema={"task_type": pl.String, "task_name": pl.String,
                                                               "row_hash": pl.UInt64})


def write_build(triplets: TaskGrouped | pa.Table, card: Callable[[int], str], dest: Path, max_shard_bytes: int,
                extra: dict[str, pa.Table] | None = None, texts: dict[str, str] | None = None,
                with_triplets: bool = False) -> str:
    """Write every config's shards + the card (rendered given the default config's total bytes) into `dest`
    atomically; returns the content hash. `triplets` is the task-grouped rows (`default` and one config per
    task_type; a plain table is taken as already in task order); `with_triplets` also writes them as the
    `triplets` config (inputs only, same order, a shard at a time); `extra` the other configs by name (see
    `layout`); `texts` other files by path (`LICENSES.md`, and `.gistforge/facts.json`, hidden, so outside the
    content hash)."""
    if isinstance(triplets, pa.Table):
        triplets = TaskGrouped.presorted(triplets)
    hashes: list[pl.DataFrame] = []
    with atomic.atomic_dir(Path(dest)) as tmp:
        names = []
        for part in triplets.parts():
            names += layout.write_parts(part.stop - part.start, triplets.nbytes(part.start, part.stop),
                                        lambda at, n, a=part.start: triplets.rows(a + at, a + at + n), tmp,
                                        layout.task_config(part.task_type).folder, max_shard_bytes,
                                        each=lambda shard: hashes.append(row_hashes(shard)))
        if not names:  # no row at all: one empty shard keeps the layout valid (an empty build is never published)
            names = layout.write_shards(SCHEMA.empty_table(), tmp, layout.task_config("none").folder,
                                        max_shard_bytes)
        if with_triplets:
            layout.write_parts(triplets.num_rows, triplets.column_nbytes(list(TRIPLET_COLUMNS)),
                               lambda at, n: triplet_inputs(triplets, at, at + n), tmp,
                               layout.extra_config("triplets").folder, max_shard_bytes)
        for name, extra_table in (extra or {}).items():
            layout.write_shards(extra_table, tmp, layout.extra_config(name).folder, max_shard_bytes)
        (tmp / ".gistforge").mkdir()
        for name, text in (texts or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        (tmp / "README.md").write_text(card(sum((tmp / n).stat().st_size for n in names)), encoding="utf-8")
        (pl.concat(hashes) if hashes else row_hashes(SCHEMA.empty_table())).write_parquet(
            tmp / ".gistforge" / "row_hashes.parquet")
        digest = content_hash(tmp)
        (tmp / ".gistforge-build.json").write_text(json.dumps({"content_hash": digest, "rows": triplets.num_rows}))
        faults.point("write")
    return digest


def read_build_hash(folder: Path) -> str:
    return json.loads((Path(folder) / ".gistforge-build.json").read_text())["content_hash"]


# ------------------------------------------------------------------------------------------------ the stage

class EmptyBuildError(ValueError):
    """Every source came out empty: there is nothing to publish."""


# Every row drop any stage makes, in the order the card lists them.
DROP_REASONS = {**clean.DROPS, **miner.DROPS, **decontaminate.DROPS}
# The build is always redone (it is cheap next to mining, and its checks must see the files it publishes);
# its version is the asset's code version.
# 5: `triplets` and `ntuple_tasks` configs, `ntuple` as sentence-transformers names it, escaped card, writer versions;
# 4: config sizes are content bytes; 3: per-task and extra configs
SPEC = StageSpec("build", version="5")


class ConfigRows(BaseModel):
    name: str
    rows: int
    num_bytes: int
    kind: str  # "task" for the per-task configs, else the config's own name (see `layout.config_files`)


class BuildReport(BaseModel):
    content_hash: str
    rows: int
    shards: list[str]
    tasks: list[TaskRows]
    accounts: list[RowAccount]
    excluded: dict[str, str]
    checks: list[CheckOutcome]


@holding_lock
def build_dataset(ws: Workspace, cfg: BuildConfig) -> BuildReport:
    """Assemble MEDI + every included task's triplets into shards and a card (atomically), then check them."""
    medi_report = ws.load_report(ws.medi_rows(), MediReport)
    frames = [medi_frame(pl.read_parquet(ws.medi_rows()))]
    accounts = [medi_report.account]
    sources: list[SourceRows] = [SourceRows.of("MEDI", medi_report.source, medi_report.account)] if cfg.medi else []
    mined_frames, candidates, corpora = [], [], []
    guide = None
    outcomes: list[MiningOutcome] = []
    for src in cfg.included_tasks:
        path = ws.triplets(src.name)
        if not path.exists():
            raise FileNotFoundError(f"no mined triplets for task {src.name!r} at {path}; materialise its partition first")
        mined_frames.append(pl.read_parquet(path))
        candidates.append(pl.read_parquet(ws.candidates(src.name)))
        corpora.append(pl.read_parquet(ws.corpus(src.name)))
        ingest, mined = ws.load_report(ws.split(src.name), SplitReport), ws.load_report(path, MineReport)
        accounts += [ingest.account, mined.account]
        sources.append(SourceRows.of(src.name, ingest.source, ingest.account, mined.account))
        guide = mined.guide
        outcomes.append(MiningOutcome(task=src.name, negatives=mined.mining.negatives, label_noise=mined.label_noise,
                                      agreement=mined.agreement))
    mined_tables = layout.MinedTables(mined_frames, candidates, corpora, cfg.mining.negatives_per_query)
    extra = layout.derived_tables(mined_tables)
    frames += mined_frames
    del mined_tables, mined_frames, candidates, corpora
    triplets = assemble(frames, cfg.seed)
    if triplets.num_rows == 0:
        raise EmptyBuildError(f"profile {cfg.profile!r}: no rows to publish (no MEDI rows and no mined triplets; "
                              "see each source's drops): an empty version is never published")
    tasks = triplets.tasks()
    reference = ws.load_report(ws.test_texts(), decontaminate.ReferenceReport) if ws.test_texts().exists() else None
    configs = [ConfigRows(name=p.task_type, rows=p.stop - p.start, num_bytes=triplets.nbytes(p.start, p.stop),
                          kind="task") for p in triplets.parts()]
    configs.append(ConfigRows(name="triplets", rows=triplets.num_rows,
                              num_bytes=triplets.column_nbytes(list(TRIPLET_COLUMNS)), kind="triplets"))
    configs += [ConfigRows(name=name, rows=t.num_rows, num_bytes=t.nbytes, kind=name) for name, t in extra.items()]
    guide_facts = {"name": guide.name, "revision": guide.revision} if guide else \
        {"name": public_model_name(cfg.guide_model), "revision": cfg.guide_revision or "n/a"}
    facts = VersionFacts(sources=sources, accounts=accounts, guide=guide_facts,
                         mining={**cfg.mining.miner_settings(), "seed": cfg.seed})
    card = functools.partial(
        render_card, repo_id=cfg.dataset_repo_id, schema=SCHEMA, num_rows=triplets.num_rows,
        num_bytes=triplets.nbytes(), sources=[s.model_dump() for s in sources],
        configs=[c.model_dump() for c in configs],
        extra_schemas=layout.extra_schemas(cfg.mining.negatives_per_query),
        exclusions=cfg.exclusions,
        guide=guide_facts, mining=cfg.mining.miner_settings(), seed=cfg.seed, tasks=tasks, accounts=accounts,
        drop_reasons=DROP_REASONS,
        decontamination=cfg.decontamination, reference=reference, outcomes=outcomes,
        rounds=mining_rounds(ws, cfg) if ws.final and cfg.mining.rounds > 1 else None,
    )
    provenance = [s.model_dump() for s in sources]
    texts = {"LICENSES.md": licenses_md(provenance)} if "license_link" in top_license(provenance) else {}
    texts[FACTS] = facts.model_dump_json(indent=2)
    digest = write_build(triplets, lambda size: card(download_size=size), ws.build_dir(), cfg.max_shard_bytes,
                         extra, texts, with_triplets=True)
    rows = triplets.num_rows
    del triplets, extra  # the checks read the written shards, one at a time
    shards = [p.relative_to(ws.build_dir()).as_posix() for p in layout.DEFAULT.files(ws.build_dir())]
    checks = verify_build(ws.build_dir(), cfg.exclusions, accounts,
                          decontaminate.reference_keys(ws, cfg.decontamination))
    report = BuildReport(content_hash=digest, rows=rows, shards=shards,
                         tasks=tasks, accounts=accounts, excluded=cfg.exclusions,
                         checks=checks)
    ws.save_report(report, ws.build_report())
    return report


def mining_rounds(ws: Workspace, cfg: BuildConfig) -> list[MiningRound]:
    """Every round's guide (from its tasks' mining reports) and the build that trained the next one."""
    out = []
    for r in range(1, cfg.mining.rounds + 1):
        view = ws.at_round(r, cfg.mining.rounds)
        mined = [view.load_report(view.triplets(s.name), MineReport) for s in cfg.included_tasks]
        guide = next((m.guide for m in reversed(mined) if m.guide.cache_key), None)
        out.append(MiningRound(
            round=r, guide=guide.name if guide else public_model_name(cfg.guide_model),
            revision=guide.revision if guide else "n/a", triplets=sum(m.mining.triplets for m in mined),
            trained_next=None if view.final else view.load_report(view.build_report(), BuildReport).content_hash))
    return out


def last_build(ws: Workspace) -> BuildReport:
    """The report of the workspace's current build."""
    return ws.load_report(ws.build_report(), BuildReport)
