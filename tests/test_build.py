"""The build (`pipeline.road.build`): the `task_type` rule and grouping, byte-identical Hub-style shards, checks
that read one shard at a time."""


import numpy as np
import polars as pl
import pyarrow.parquet as pq

from pipeline.config import TaskSource
from pipeline.road.build import assemble, content_hash, medi_frame, write_build
from pipeline.road.mine import triplet_frame
from pipeline.road.mined import MinedTriplets, MiningStats
from pipeline.schema import SCHEMA


def _frames(seed_rows=30):
    split = pl.DataFrame({"text": [f"text {i}" for i in range(seed_rows)],
                          "label": [str(i % 3) for i in range(seed_rows)],
                          "label_text": [f"L{i % 3}" for i in range(seed_rows)]})
    q = np.arange(seed_rows)
    mined = MinedTriplets(q, (q + 3) % seed_rows, (q + 1) % seed_rows, np.full(seed_rows, 0.9, np.float32),
                          np.full(seed_rows, 0.5, np.float32), MiningStats(queries=seed_rows, search="exact"))
    mteb = triplet_frame(split, mined, TaskSource(name="Banking77Classification"))
    local = triplet_frame(split, mined, TaskSource(name="MyTask", kind="local", path="x.csv"))
    medi = medi_frame(pl.DataFrame({c: [f"{c}{i}" for i in range(10)] for c in
                                    ["query", "pos", "neg", "query_instruct", "pos_instruct", "neg_instruct"]}
                                   ).with_columns(task_name=pl.Series(["nq"] * 5 + ["msmarco"] * 5)))
    return [mteb, medi, local]


def test_task_type_rule_and_grouping_by_task():
    table = assemble(_frames(), seed=1).to_table()
    assert table.schema == SCHEMA
    df = pl.from_arrow(table)
    assert df.filter(pl.col("source") == "mteb")["task_type"].unique().to_list() == ["mteb_banking77"]
    assert not df.filter(pl.col("source") != "mteb")["task_type"].str.starts_with("mteb_").any()
    assert df.filter(pl.col("source") == "local")["task_type"].unique().to_list() == ["local_my_task"]
    # each task is one contiguous block
    runs = df.select((pl.col("task_name") != pl.col("task_name").shift()).fill_null(True).cum_sum())[:, 0]
    assert runs.n_unique() == df["task_name"].n_unique()
    # shuffled within the task, deterministically
    block = df.filter(pl.col("task_name") == "Banking77Classification")["query"].to_list()
    assert block != sorted(block, key=lambda t: int(t.split()[1]))
    assert pl.from_arrow(assemble(_frames(), seed=1).to_table()).equals(df)
    assert not pl.from_arrow(assemble(_frames(), seed=2).to_table()).equals(df)


def test_build_is_byte_identical_and_sharded_like_the_hub(tmp_path):
    table = assemble(_frames(200), seed=1)
    h1 = write_build(table, lambda size: f"card {size}", tmp_path / "a", max_shard_bytes=4096)
    h2 = write_build(table, lambda size: f"card {size}", tmp_path / "b", max_shard_bytes=4096)
    assert h1 == h2 == content_hash(tmp_path / "a")
    dirs = sorted(p.name for p in (tmp_path / "a" / "data").iterdir())
    assert dirs == ["local_my_task", "medi", "mteb_banking77"], "one folder per task_type: the per-task configs"
    for d in dirs:
        files = sorted(p.name for p in (tmp_path / "a" / "data" / d).iterdir())
        n = len(files)
        assert files == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
        for name in files:
            assert (tmp_path / "a/data" / d / name).read_bytes() == (tmp_path / "b/data" / d / name).read_bytes()
    files = sorted((tmp_path / "a" / "data").glob("*/*.parquet"))
    assert len(files) > 3 and sum(pq.read_metadata(f).num_rows for f in files) == table.num_rows
    meta = pq.read_metadata(files[0])
    assert meta.row_group(0).column(0).has_offset_index, "page index written (the Hub viewer's random access)"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp folders left behind"


def test_checks_read_one_shard_at_a_time_and_add_up_over_shards(tmp_path):
    from pipeline.road.checks import verify_build

    df = pl.from_arrow(assemble(_frames(), seed=1).to_table())
    mined = np.flatnonzero((df["source"] != "medi").to_numpy())
    bad = [int(mined[0]), int(mined[-1])]  # far apart: in different shards
    df = df.with_columns(neg_label=pl.when(pl.int_range(df.height).is_in(bad)).then(pl.col("query_label"))
                         .otherwise(pl.col("neg_label")))
    card = lambda _: f"---\ndataset_info:\n  splits:\n  - name: train\n    num_examples: {df.height}\n---\n"
    write_build(df.to_arrow().cast(SCHEMA), card, tmp_path / "build", max_shard_bytes=2_000)
    outcomes = {o.name: o for o in verify_build(tmp_path / "build", {"MyTask": "testing"}, [])}
    assert outcomes["output_schema"].metadata["shards"] >= 2
    assert not outcomes["negative_label_differs"].passed and outcomes["negative_label_differs"].metadata["violations"] == 2
    assert outcomes["no_excluded_task"].metadata["rows"] == 30  # the local task's rows, wherever they landed
    assert outcomes["shards_match_card"].passed and outcomes["shards_match_card"].metadata["shard_rows"] == df.height
    assert outcomes["task_type_rule"].passed and outcomes["distinct_triplet_texts"].passed


def test_shards_taken_one_at_a_time_equal_slices_of_the_sorted_table(tmp_path):
    """The build never materialises the task-grouped table: each shard takes its rows when it is written. Its
    files are those of the same rows sorted first and sliced (the order, shard cuts and row groups)."""
    grouped = assemble(_frames(200), seed=3)
    sorted_table = grouped.to_table()
    write_build(grouped, lambda size: "card", tmp_path / "lazy", max_shard_bytes=4096)
    write_build(sorted_table, lambda size: "card", tmp_path / "sorted", max_shard_bytes=4096)
    lazy = sorted(p.relative_to(tmp_path / "lazy") for p in (tmp_path / "lazy").rglob("*.parquet"))
    assert len([p for p in lazy if p.parts[0] == "data"]) > 3
    assert lazy == sorted(p.relative_to(tmp_path / "sorted") for p in (tmp_path / "sorted").rglob("*.parquet"))
    for rel in lazy:
        assert (tmp_path / "lazy" / rel).read_bytes() == (tmp_path / "sorted" / rel).read_bytes(), rel
    assert grouped.nbytes() == sum(grouped.nbytes(p.start, p.stop) for p in grouped.parts())
