"""The dataset card (`README.md`): YAML the Hub and `datasets` read, and a body that records provenance."""

from __future__ import annotations

from typing import Callable

import pyarrow as pa
import yaml
from pydantic import BaseModel

from pipeline.common.accounting import RowAccount
from pipeline.common.markdown import Markdown, code, escape, markdown_table
from pipeline.config import DecontaminationConfig
from pipeline.road import layout
from pipeline.road.agreement import Agreement
from pipeline.road.decontaminate import ReferenceReport
from pipeline.road.deep_search import NTUPLE_MISSING, NegativeSources
from pipeline.road.grouped import TaskRows
from pipeline.road.label_noise import LabelNoiseReport

_DTYPES = {pa.string(): "string", pa.bool_(): "bool", pa.float32(): "float32"}

COLUMN_DOCS = {
    "query": "anchor text", "pos": "positive text", "neg": "negative text",
    "task_name": "source task (MEDI task name, or the MTEB task name)",
    "task_type": "`mteb_<task>` for MTEB rows (and only them), `medi` for MEDI rows, `local_<task>` for local files",
    "query_instruct": "instruction for the query (empty for mined rows)",
    "pos_instruct": "instruction for the positive", "neg_instruct": "instruction for the negative",
    "symmetric": "query and positive are the same kind of text",
    "source": "`medi`, `mteb` or `local`", "query_label": "label of query and positive (mined rows)",
    "neg_label": "label of the negative (mined rows)",
    "pos_score": "guide-model cosine similarity (query, pos)", "neg_score": "guide-model cosine similarity (query, neg)",
}


def top_license(sources: list[dict]) -> dict:
    """One licence when every source has the same known one; otherwise `other`, named `mixed`, pointing at the
    per-source table (`LICENSES.md`): the mixture is never passed off as a single licence."""
    found = {s["license"] for s in sources}
    if len(found) == 1 and "unknown" not in found and "other" not in found:
        return {"license": found.pop()}
    return {"license": "other", "license_name": "mixed", "license_link": "LICENSES.md"}


def _features(schema: pa.Schema) -> list:
    from datasets import Features

    return Features.from_arrow_schema(schema)._to_yaml_list()


def card_yaml(schema: pa.Schema, num_rows: int, num_bytes: int, download_size: int, repo_id: str,
              sources: list[dict] | None = None, configs: list[dict] | None = None,
              extra_schemas: dict[str, pa.Schema] | None = None) -> dict:
    sources, configs, extra_schemas = sources or [], configs or [], extra_schemas or {}
    schemas = {"task": schema, **extra_schemas}
    files = {"default": layout.DEFAULT.pattern}
    files |= {c["name"]: layout.config_files(c["name"], c["kind"]).pattern for c in configs}
    info = [{"config_name": "default", "features": _features(schema),
             "splits": [{"name": "train", "num_bytes": num_bytes, "num_examples": num_rows}],
             "download_size": download_size, "dataset_size": num_bytes}]
    info += [{"config_name": c["name"], "features": _features(schemas[c["kind"]]),
              "splits": [{"name": "train", "num_bytes": c["num_bytes"], "num_examples": c["rows"]}]} for c in configs]
    return {
        **top_license(sources),
        "language": ["en"],
        "pretty_name": repo_id.split("/")[-1],
        "task_categories": ["sentence-similarity", "feature-extraction"],
        "tags": ["embeddings", "triplets", "gist", "medi", "mteb", "gistforge"],
        "size_categories": [_size_category(num_rows)],
        "source_datasets": sorted({s["repo"].split(" ")[0] for s in sources if "/" in s["repo"]}),
        "configs": [{"config_name": name, "data_files": [{"split": "train", "path": pattern}],
                     **({"default": True} if name == "default" else {})} for name, pattern in files.items()],
        "dataset_info": info,
    }


def licenses_md(sources: list[dict]) -> str:
    """`LICENSES.md`: what the card's `license_link` points at when the sources' licences differ."""
    return "\n".join(["# Licences of the sources", "",
                      "This dataset mixes sources under different terms; each row's `task_name`/`task_type` says "
                      "which source it comes from, and each source's terms apply to its rows.", "",
                      sources_table(sources), ""])


# The card's provenance and row-accounting tables, as the card writes them and `gistforge show` gives them back.
SOURCE_COLUMNS = ["source", "repo / file", "revision", "resolved commit", "licence", "licence from", "rows in",
                  "rows out"]
ACCOUNTING_COLUMNS = ["stage / source", "rows in", "rows out", "dropped", "drops by reason"]


def source_row(s: dict, span: Callable[[str], str] = code) -> list:
    """One source's row (`SourceRows` as a dict); `span` sets a revision or commit: a code span in the card, plain
    text for `gistforge show`."""
    revision = Markdown(span(s["revision"]) + (" (a moving ref)" if s["moving_ref"] else "")) if s["revision"] else ""
    return [s["source"], s["repo"], revision, span(s["commit"]) if s["commit"] else "", s["license"], s["license_from"],
            s["rows_in"], s["rows_out"]]


def accounting_row(a: RowAccount) -> list:
    return [a.source, a.rows_in, a.rows_out, a.rows_in - a.rows_out,
            ", ".join(f"{k}: {v}" for k, v in sorted(a.drops.items())) or "none"]


def sources_table(sources: list[dict]) -> str:
    """Every string here comes from outside (a source card's licence, a repo or file name): escaped."""
    return markdown_table(SOURCE_COLUMNS, [source_row(s) for s in sources])


def writer_versions() -> dict[str, str]:
    """The libraries whose versions decide the published bytes: pyarrow writes the shards, polars assembles and
    orders the rows they hold, datasets writes the card's `features`."""
    from importlib.metadata import version

    return {name: version(name) for name in ("pyarrow", "polars", "datasets")}


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def render_card(*, repo_id: str, schema: pa.Schema, num_rows: int, num_bytes: int, download_size: int,
                sources: list[dict], exclusions: dict[str, str], guide: dict, mining: dict, seed: int,
                tasks: list[TaskRows], accounts: list[RowAccount], drop_reasons: dict[str, str],
                decontamination: DecontaminationConfig, reference: ReferenceReport | None,
                configs: list[dict] | None = None, extra_schemas: dict[str, pa.Schema] | None = None,
                writers: dict[str, str] | None = None, outcomes: list["MiningOutcome"] | None = None,
                rounds: list["MiningRound"] | None = None) -> str:
    """Deterministic card text: no timestamps, sorted keys, only build inputs and results (and the versions of
    the libraries that wrote the files, `writers`, by default those installed: see `writer_versions`).
    Every string from outside (sources, task names, licences, file names) is escaped (`markdown.escape`)."""
    writers = writer_versions() if writers is None else writers
    meta = yaml.safe_dump(card_yaml(schema, num_rows, num_bytes, download_size, repo_id, sources, configs,
                                    extra_schemas), sort_keys=False)
    moving = [s["source"] for s in sources if s["moving_ref"]]
    parts = [
        f"---\n{meta}---\n",
        f"# {escape(repo_id)}\n",
        "GIST-style training triplets built by gistforge: "
        "MEDI instruction triplets plus label-based triplets mined from MTEB(eng, v1) classification train "
        "splits with FAISS hard-negative retrieval guided by an embedding model (GISTEmbed, arXiv 2402.16829).\n",
        "## Using it\n",
        "Load a pinned version with the snippet under **Version** at the end of this card (written for where "
        "this version was published: the Hub, or a local hub folder). One task alone is its own config (see "
        "**Configs**): `load_dataset(path, \"mteb_banking77\", split=\"train\")`; all MTEB rows of the default "
        "config:\n",
        "```python\nmteb_rows = ds.filter(lambda r: r[\"task_type\"].startswith(\"mteb_\"))\n```\n",
        "The `triplets` config holds the same rows, in the same order, as `anchor, positive, negative` and nothing "
        "else, so sentence-transformers' trainer (which feeds every column as an input) takes it as it is:\n",
        "```python\ntrainer = SentenceTransformerTrainer(model=model, train_dataset=load_dataset(path, \"triplets\", "
        "split=\"train\"),\n                                   loss=MultipleNegativesRankingLoss(model))\n```\n",
        "Rows are grouped by task (GIST's trainer skips batches that mix tasks) and shuffled within each task.\n",
        "## Columns\n",
        markdown_table(["column", "type", "meaning"],
                       [[f.name, _DTYPES[f.type], Markdown(COLUMN_DOCS.get(f.name, ""))] for f in schema]),
        "\n## Configs\n",
        _configs(configs or []),
        "\n## Sources and licences\n",
        sources_table(sources) if sources else "No source.",
        "\n" + (f"Read from a moving ref (the commit above is the one this build read; a later build may read "
                f"another): {', '.join(escape(m) for m in moving)}.\n" if moving else
                "Every Hub source was read at a pinned commit.\n"),
        "The top-level licence is the sources' common licence, or `other` (`mixed`, see LICENSES.md) when they "
        "differ or one is unknown: each source's own terms apply to its rows.\n",
        "\n## Excluded tasks\n",
        markdown_table(["task", "reason"], [[k, v] for k, v in sorted(exclusions.items())]) if exclusions else "None.",
        "\nThe exclusion policy of this build; excluded tasks are never ingested.\n",
        "## Guide model and mining\n",
        f"Guide model: {code(guide['name'])} at revision {code(guide['revision'])}.\n",
        markdown_table(["parameter", "value"], [[k, v] for k, v in mining.items()] + [["seed", seed]]),
        *([_rounds(rounds)] if rounds else []),
        *([_agreement(outcomes)] if any(o.agreement for o in outcomes or []) else []),
        *([_negatives(outcomes), _label_noise(outcomes)] if outcomes else []),
        "\n## Rows per task\n",
        markdown_table(["task_type", "task_name", "rows"], [[t.task_type, t.task_name, t.rows] for t in tasks]),
        f"\nTotal: {num_rows} rows.\n",
        "## Decontamination\n",
        _decontamination(decontamination, reference, accounts),
        "## Row accounting\n",
        "For every source, rows in = rows out + rows dropped.\n",
        markdown_table(ACCOUNTING_COLUMNS, [accounting_row(a) for a in accounts]),
        "\n" + markdown_table(["drop reason", "meaning"], [[k, v] for k, v in drop_reasons.items()]),
        "\n## Written by\n",
        markdown_table(["library", "version"], sorted(writers.items())),
        "\nThe parquet bytes, and so the content hash and the tag, depend on these versions: the same inputs "
        "written by other versions may give another tag.\n",
    ]
    return "\n".join(parts)


def _agreement(outcomes: list["MiningOutcome"]) -> str:
    """Per task mined in reduced precision: how its guide vectors agree with fp32 (`pipeline.road.agreement`)."""
    rows = [[o.task, code(a.precision), a.sample, f"{a.top10_overlap:.4f}", f"{a.mean_cosine:.6f}",
             f"{a.min_cosine:.6f}"] for o in outcomes if (a := o.agreement) is not None]
    return ("\nThe guide encoded in reduced precision; a fixed sample of each task's texts was encoded again in fp32 "
            "and compared (each text's 10 nearest neighbours within the sample, and each text's two vectors):\n\n"
            + markdown_table(["task", "precision", "texts", "top-10 neighbour overlap", "mean cosine", "min cosine"],
                             rows))


def _configs(configs: list[dict]) -> str:
    rows = [[code(c["name"]), c["rows"],
             Markdown(layout.config_doc(c["name"]))] for c in configs]
    return markdown_table(["config", "rows", "holds"], rows) + (
        "\n\n`load_dataset(path_or_repo, \"<config>\", revision=<tag>, split=\"train\")` reads one config; "
        "the per-task configs are the default config's own files, not copies.\n")


def _decontamination(cfg: DecontaminationConfig, ref: ReferenceReport | None, accounts: list[RowAccount]) -> str:
    if ref is None:
        return "No decontamination reference was built.\n"
    leaks = [[a.source, a.drops.get("test_leak", 0), a.drops.get("test_near_duplicate", 0)] for a in accounts]
    return "\n".join([
        f"Training texts (MTEB and MEDI rows: query, pos and neg) equal to one of the {ref.test_texts} MTEB "
        "test-split texts after normalisation (NFKC, case-fold, whitespace collapse) are removed"
        + (f"; task texts whose guide similarity to a same-task test text is at least "
           f"{cfg.near_duplicate_threshold} are removed too." if cfg.near_duplicate_threshold else "."),
        "",
        markdown_table(["test split", "texts"], sorted(ref.per_task.items())),
        "",
        markdown_table(["source / stage", "exact leaks removed", "near duplicates removed"], leaks),
        "",
        *([markdown_table(["task not decontaminated", "why"], sorted(ref.not_decontaminated.items())), ""]
          if ref.not_decontaminated else []),
    ])


class MiningOutcome(BaseModel):
    """What the card shows of one task's mining: where its negatives came from, its label-noise audit, and how
    a reduced-precision guide agreed with fp32 (None at fp32)."""

    task: str
    negatives: NegativeSources
    label_noise: LabelNoiseReport | None = None
    agreement: Agreement | None = None


class MiningRound(BaseModel):
    """One mining round of a `mining.rounds` > 1 build: its guide, what it mined, and (but for the last) the
    content hash of its build, which the next round's guide was fine-tuned on."""

    round: int
    guide: str
    revision: str
    triplets: int
    trained_next: str | None = None


def _rounds(rounds: list[MiningRound]) -> str:
    rows = [[r.round, code(r.guide), code(r.revision), r.triplets,
             code(r.trained_next[:12]) if r.trained_next else "published here"] for r in rounds]
    return (f"\n### Mining rounds\n\nMined {len(rounds)} times (`mining.rounds: {len(rounds)}`): each round after the "
            "first mines with the encoder fine-tuned (the `training` settings) on the previous round's build, MEDI "
            "included, as its guide; only the last round's triplets are in this version. A fine-tuned guide's "
            "revision is the digest of its files.\n\n"
            + markdown_table(["round", "guide", "revision", "triplets mined", "its build (trains the next guide)"],
                             rows))


def _negatives(outcomes: list[MiningOutcome]) -> str:
    """Retrieved vs random-fallback negatives per task, and the `ntuple` config's coverage with why queries miss."""
    rows = []
    for o in outcomes:
        n = o.negatives
        missing = ", ".join(f"{k}: {v}" for k, v in sorted(n.ntuple_missing.items())) or "none"
        rows.append([o.task, n.retrieved, n.fallback, n.uniform, f"{n.fallback_share:.2%}",
                     f"{n.deep_filled} of {n.deep_searched}" + (f" (to depth {n.deepest})" if n.deepest else ""),
                     f"{n.ntuple_queries} (k = {n.ntuple_k})", missing])
    return "\n".join([
        "\n### Negatives\n",
        "Retrieved negatives passed the margin guard; a fallback is a random other-label text (GIST's easy "
        "negative), used only when no retrieved candidate passed, after any deeper search "
        "(`negative_max_depth`); `uniform` are GIST's recipe's random negatives.\n",
        markdown_table(["task", "retrieved", "fallback", "uniform", "fallback share", "deeper search filled",
                        "ntuple rows", "queries not in ntuple"], rows),
        "\n" + markdown_table(["not in ntuple", "why"], [[k, v] for k, v in NTUPLE_MISSING.items()]
                               + [["single_member_label, no_other_label", "dropped before mining (see Row accounting)"]]),
    ])


def _label_noise(outcomes: list[MiningOutcome]) -> str:
    """Per task: texts whose nearest neighbours overwhelmingly carry one other label, counts and a few examples."""
    audited = [o for o in outcomes if o.label_noise is not None]
    if not audited:
        return "\n### Label noise\n\nNo audit (`mining.label_noise_k: 0`).\n"
    first = audited[0].label_noise
    rows, examples = [], []
    for o in audited:
        r = o.label_noise
        pairs = "; ".join(f"{k}: {v}" for k, v in r.top_pairs.items()) or "none"
        rows.append([o.task, r.audited, r.mean_own_share if r.mean_own_share is not None else "", r.flagged,
                     r.dropped, pairs])
        examples += [[o.task, e.text, e.label, e.neighbours_label, e.share] for e in r.examples]
    return "\n".join([
        "\n### Label noise\n",
        f"Each text's {first.k} nearest neighbours (guide cosine, from the mining's own searches): a text is "
        f"flagged when at least {first.share:.0%} of them carry one other label (the kNN label-issue score of "
        "confident learning, as cleanlab's Datalab computes it). Dropped: removed before mining "
        "(`clean.drop_label_noise`), counted as `label_noise`.\n",
        markdown_table(["task", "audited", "mean own-label share", "flagged", "dropped",
                        "most frequent (label -> neighbours' label)"], rows),
        *(["\n" + markdown_table(["task", "flagged text (start)", "label", "neighbours' label", "share"], examples)]
          if examples else []),
        "",
    ])
