"""The dataset card (`README.md`): YAML the Hub and `datasets` read, and a body that records provenance."""

from __future__ import annotations

import json

import pyarrow as pa
import yaml

from pipeline.common.accounting import RowAccount
from pipeline.common.markdown import markdown_table
from pipeline.config import DecontaminationConfig
from pipeline.road.decontaminate import ReferenceReport

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


def card_yaml(schema: pa.Schema, num_rows: int, num_bytes: int, download_size: int, repo_id: str) -> dict:
    return {
        "license": "other",
        "language": ["en"],
        "pretty_name": repo_id.split("/")[-1],
        "task_categories": ["sentence-similarity", "feature-extraction"],
        "tags": ["embeddings", "triplets", "gist", "medi", "mteb", "gistforge"],
        "size_categories": [_size_category(num_rows)],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
        "dataset_info": {
            "features": [{"name": f.name, "dtype": _DTYPES[f.type]} for f in schema],
            "splits": [{"name": "train", "num_bytes": num_bytes, "num_examples": num_rows}],
            "download_size": download_size,
            "dataset_size": num_bytes,
        },
    }


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def render_card(*, repo_id: str, schema: pa.Schema, num_rows: int, num_bytes: int, download_size: int,
                sources: dict, exclusions: dict[str, str], guide: dict, mining: dict, seed: int,
                tasks: list[dict], accounts: list[RowAccount], drop_reasons: dict[str, str],
                decontamination: DecontaminationConfig, reference: ReferenceReport | None) -> str:
    """Deterministic card text: no timestamps, sorted keys, only build inputs and results."""
    meta = yaml.safe_dump(card_yaml(schema, num_rows, num_bytes, download_size, repo_id), sort_keys=False)
    medi = sources.get("medi")
    task_rows = [[s["task"], s.get("kind"), s.get("repo_id") or s.get("path"), s.get("config") or "",
                  f"`{s['revision']}`" if s.get("revision") else "", "embedded sample" if s.get("sample") else ("local file" if s.get("kind") == "local" else "full split")]
                 for s in sources.get("tasks", [])]
    acc_rows = []
    for a in accounts:
        drops = ", ".join(f"{k}: {v}" for k, v in sorted(a.drops.items())) or "none"
        acc_rows.append([a.source, a.rows_in, a.rows_out, a.rows_in - a.rows_out, drops])
    parts = [
        f"---\n{meta}---\n",
        f"# {repo_id}\n",
        "GIST-style training triplets built by [gistforge](https://pypi.org/project/gistforge/): "
        "MEDI instruction triplets plus label-based triplets mined from MTEB(eng, v1) classification train "
        "splits with FAISS hard-negative retrieval guided by an embedding model (GISTEmbed, arXiv 2402.16829).\n",
        "## Using it\n",
        "Load a pinned version with the snippet under **Version** at the end of this card (written for where "
        "this version was published: the Hub, or a local hub folder), then, for example:\n",
        "```python\nmteb_rows = ds.filter(lambda r: r[\"task_type\"].startswith(\"mteb_\"))\n```\n",
        "Rows are grouped by task (GIST's trainer skips batches that mix tasks) and shuffled within each task.\n",
        "## Columns\n",
        markdown_table(["column", "type", "meaning"], [[f.name, _DTYPES[f.type], COLUMN_DOCS.get(f.name, "")] for f in schema]),
        "\n## Sources\n",
        f"MEDI: `{json.dumps(medi, sort_keys=True)}`\n" if medi else "MEDI: not included\n",
        markdown_table(["task", "kind", "repo / file", "config", "revision", "data"], task_rows),
        "\n## Excluded tasks\n",
        markdown_table(["task", "reason"], [[k, v] for k, v in sorted(exclusions.items())]) if exclusions else "None.",
        "\nThe exclusion policy of this build; excluded tasks are never ingested.\n",
        "## Guide model and mining\n",
        f"Guide model: `{guide['name']}` at revision `{guide['revision']}`.\n",
        markdown_table(["parameter", "value"], [[k, v] for k, v in mining.items()] + [["seed", seed]]),
        "\n## Rows per task\n",
        markdown_table(["task_type", "task_name", "rows"], [[t["task_type"], t["task_name"], t["rows"]] for t in tasks]),
        f"\nTotal: {num_rows} rows.\n",
        "## Decontamination\n",
        _decontamination(decontamination, reference, accounts),
        "## Row accounting\n",
        "For every source, rows in = rows out + rows dropped.\n",
        markdown_table(["stage / source", "rows in", "rows out", "dropped", "drops by reason"], acc_rows),
        "\n" + markdown_table(["drop reason", "meaning"], [[k, v] for k, v in drop_reasons.items()]),
        "",
    ]
    return "\n".join(parts)


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
