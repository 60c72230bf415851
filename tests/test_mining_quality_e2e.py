"""Fallback/coverage and label-noise lines in the card; `clean.drop_label_noise` end to end on the embedded default."""

import pytest
import polars as pl
import yaml

from pipeline.config import CleanConfig, DecontaminationConfig, MiningConfig
from pipeline.profiles import embedded_profile
from pipeline.road.build import DROP_REASONS
from pipeline.road.card import MiningOutcome, render_card
from pipeline.road.deep_search import NegativeSources
from pipeline.road.label_noise import LabelNoiseReport, NoisyText
from pipeline.schema import SCHEMA

PAYLOAD = "<img src=x> | [a](https://evil.example)\n# H"


def test_card_shows_negative_sources_ntuple_coverage_and_label_noise_escaped():
    outcome = MiningOutcome(
        task="T", negatives=NegativeSources(retrieved=90, fallback=10, deep_searched=30, deep_filled=20, deepest=256,
                                            ntuple_k=4, ntuple_queries=70, ntuple_missing={"fallback_only": 10,
                                                                                           "fewer_guarded": 20}),
        label_noise=LabelNoiseReport(k=10, share=0.8, audited=100, mean_own_share=0.7, flagged=3,
                                     top_pairs={"neg -> pos": 3},
                                     examples=[NoisyText(text=PAYLOAD, label="neg", neighbours_label="pos", share=0.9)]))
    card = render_card(repo_id="org/ds", schema=SCHEMA, num_rows=3, num_bytes=10, download_size=10, sources=[],
                       exclusions={}, guide={"name": "m", "revision": "r"}, mining=MiningConfig().model_dump(), seed=1,
                       tasks=[], accounts=[], drop_reasons=DROP_REASONS, decontamination=DecontaminationConfig(),
                       reference=None, writers={}, outcomes=[outcome])
    assert "| T | 90 | 10 | 0 | 10.00% | 20 of 30 (to depth 256) | 70 (k = 4) | fallback_only: 10, fewer_guarded: 20 |" \
        in card
    assert "| T | 100 | 0.7 | 3 | 0 | neg -&gt; pos: 3 |" in card
    assert "<img" not in card and "](https" not in card and "\n# H" not in card
    assert "label_noise" in card  # the drop reason is listed


@pytest.mark.slow
def test_drop_label_noise_end_to_end_on_the_embedded_default(tmp_path):
    """`gistforge build` (Dagster) on the embedded default with `clean.drop_label_noise: true`: flagged texts are
    counted as `label_noise`, never published, and the card and the reports say so."""
    from gistforge.cli import build
    from pipeline.road.mine import MineReport
    from pipeline.workspace import Workspace

    cfg = embedded_profile().model_copy(update={"clean": CleanConfig(drop_label_noise=True),
                                                "mining": MiningConfig(negative_max_depth=512)})
    path = tmp_path / "noise.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    home = tmp_path / "home"
    assert build(["build", "--config", str(path), "--home", str(home), "--no-finetune"]) == 0
    ws = Workspace(home, cfg.profile)
    dropped = 0
    for src in cfg.included_tasks:
        report = ws.load_report(ws.triplets(src.name), MineReport)
        assert report.account.balanced
        noise = report.label_noise
        assert noise is not None and noise.dropped == noise.flagged == report.account.drops.get("label_noise", 0)
        dropped += noise.dropped
        corpus = pl.read_parquet(ws.corpus(src.name))
        assert not set(e.text for e in noise.examples) & set(t[:120] for t in corpus["text"]), "a flagged text was mined"
        neg = report.mining.negatives
        assert neg.retrieved + neg.fallback == report.mining.triplets
    assert dropped > 0, "the embedded sample has label noise to drop"
    card = next((home / "hub").rglob("README.md")).read_text()
    assert "### Negatives" in card and "### Label noise" in card and "label_noise" in card


def test_quality_benchmark_variants_are_valid_configs():
    """The benchmark's variants are config settings (a typo would only fail 40 minutes into a run)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import quality

    assert {"gist", "default", "ntuple2", "ntuple4", "separate4", "deep", "label_noise", "rounds2"} <= set(quality.VARIANTS)
    for spec in quality.VARIANTS.values():
        MiningConfig(**spec.get("mining", {}))
        CleanConfig(**spec.get("clean", {}))
        assert spec.get("format", "triplets") in ("triplets", "ntuple", "separate")
    src = quality.task_source("slurp_intent", Path("/data"))
    assert src.kind == "local" and src.label_column == "intent" and src.test_path.name == "test.jsonl"
