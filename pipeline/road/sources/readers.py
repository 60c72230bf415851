"""Reading a source's rows: a snapshot's split through `datasets`' packaged readers (json, csv, parquet; a
loading script is never executed), a user's local file through polars, and the mapping onto canonical columns.
Every error names the source and what was expected."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import polars as pl

from pipeline.common.retry import RetryBudget
from pipeline.common.text import canonical_label
from pipeline.config import TaskSource
from pipeline.road.sources.hub import SourceError
from pipeline.road.sources.layouts import _READERS, SplitFiles, _ext
from pipeline.road.sources.resolved import ResolvedSource, resolved

log = logging.getLogger(__name__)

MISSING_LABEL_MARKERS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]


def load_split(resolved_source: ResolvedSource, config: str | None, split: str,
               source: str | None = None) -> pl.DataFrame:
    """Read one split of a resolved snapshot, from the files `ResolvedSource.split_files` located (an error lists
    the layouts tried and the files the snapshot holds); `source` names it in messages (default: its label)."""
    source = source or resolved_source.label
    found = resolved_source.split_files(config, split, source)
    return pl.from_arrow(split_dataset(source, split, found).data.table)


def split_dataset(source: str, split: str, found: SplitFiles):
    """One split's files, as located in a snapshot (`found`), read by `datasets`' packaged reader as a `Dataset`."""
    import datasets

    readers = {_READERS[_ext(p)] for p in found.files}
    if len(readers) > 1:
        raise SourceError(f"{source}: split {split!r} mixes file types: {[p.name for p in found.files]}")
    reader = readers.pop()
    options = {"delimiter": "\t"} if reader == "csv" and all(_ext(p) == ".tsv" for p in found.files) else {}
    try:
        ds = datasets.load_dataset(reader, data_files={split: [str(p) for p in found.files]}, split=split, **options)
    except (ValueError, datasets.exceptions.DatasetGenerationError) as exc:
        raise SourceError(f"{source}: cannot read split {split!r} from {[p.name for p in found.files]} "
                          f"({found.layout}): {exc}") from None
    log.debug("%s: split %r from %s (%s)", source, split, [p.name for p in found.files], found.layout)
    return ds


def _utf8(path: Path, source: str) -> bytes:
    """The file's bytes without a UTF-8 BOM; an error naming the line if they are not UTF-8."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SourceError(f"{source}: {path.name} is not valid UTF-8 at line {line} (byte {exc.start}: "
                          f"{data[exc.start:exc.start + 1]!r}); re-encode the file as UTF-8") from None
    return data


def read_local(path: Path, source: str) -> pl.DataFrame:
    if not path.exists():
        raise SourceError(f"{source}: file not found: {path}")
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix not in (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet"):
        raise SourceError(f"{source}: unsupported file type {suffix!r} for {path}; "
                          "use .csv, .tsv, .jsonl, .json or .parquet")
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        data = _utf8(path, source)
        if suffix in (".csv", ".tsv"):
            return pl.read_csv(io.BytesIO(data), separator="\t" if suffix == ".tsv" else ",", infer_schema=False)
        if suffix in (".jsonl", ".ndjson"):
            return pl.read_ndjson(io.BytesIO(data))
        return pl.DataFrame(json.loads(data))
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised with the source named
        raise SourceError(f"{source}: cannot parse {path} as {suffix[1:]}: {exc}") from None


def _require(df: pl.DataFrame, columns: dict[str, str], source: str) -> None:
    missing = {want: have for want, have in columns.items() if have not in df.columns}
    if missing:
        wanted = ", ".join(f"{have!r} (for {want})" for want, have in missing.items())
        raise SourceError(f"{source}: missing column(s) {wanted}; the source has {df.columns}")


def _string_column(df: pl.DataFrame, column: str, source: str) -> pl.Series:
    s = df.get_column(column)
    if s.dtype != pl.String and s.dtype != pl.Null:
        raise SourceError(f"{source}: column {column!r} must hold strings, found {s.dtype}")
    return s.cast(pl.String)


def _label_column(df: pl.DataFrame, column: str, source: str) -> pl.Series:
    s = df.get_column(column)
    if s.dtype.is_nested():
        raise SourceError(f"{source}: column {column!r} must hold one label per row (int or string), found {s.dtype}")
    return s.cast(pl.String)


def normalised_labels(labels: pl.Series, source: str) -> pl.Series:
    """Labels as classes: stripped, blank = missing, and numbers in one spelling (`canonical_label`), so that
    CSV's `1`, ` 1` and `1.0` (text) and JSON's 1 and 1.0 (numbers) all name class `1`. A merge is logged."""
    s = labels.str.strip_chars()
    spelled = {u: canonical_label(u) for u in s.drop_nulls().unique().to_list()}
    changed = {u: c for u, c in spelled.items() if u != c}
    if changed:
        _log_merges(spelled, source)
        s = s.replace(changed)
    return pl.select(pl.when(s.str.len_chars() > 0).then(s)).to_series().alias(labels.name)


def _log_merges(spelled: dict[str, str], source: str) -> None:
    """Say which spellings became one class: a user should know that `1.0` and `1` were merged."""
    classes: dict[str, list[str]] = {}
    for u, c in sorted(spelled.items()):
        classes.setdefault(c, []).append(u)
    merged = [f"{' and '.join(map(repr, us))} -> {c!r}" for c, us in classes.items() if len(us) > 1]
    if merged:
        log.warning("%s: labels spelled differently are one class: %s", source, "; ".join(merged[:10]))


def labelled_frame(df: pl.DataFrame, src: TaskSource, source: str) -> pl.DataFrame:
    """Map a raw split onto `text, label, label_text` (label as a string; label_text defaults to it)."""
    cols = {"text": src.text_column, "label": src.label_column}
    if src.label_text_column:
        cols["label_text"] = src.label_text_column
    _require(df, cols, source)
    label = normalised_labels(_label_column(df, src.label_column, source), source)
    label_text = _label_column(df, src.label_text_column, source).str.strip_chars() if src.label_text_column else label
    return pl.DataFrame({
        "text": _string_column(df, src.text_column, source),
        "label": label,
        "label_text": label_text.fill_null(label) if src.label_text_column else label,
    })


def load_task_split(source: TaskSource | ResolvedSource, budget: RetryBudget | None = None) -> pl.DataFrame:
    """The train split of one labelled task, as `text, label, label_text`."""
    found = resolved(source, budget)
    src, source = found.source, found.label
    if found.folder is None:
        raw = read_local(Path(src.path), source)
    else:
        raw = load_split(found, *found.train_split)
    if raw.height == 0:
        raise SourceError(f"{source}: the source is empty (0 rows)")
    log.info("loaded %s rows from %s", raw.height, source)
    df = labelled_frame(raw, src, source)
    if src.kind == "local" and Path(src.path).suffix.lower() in (".csv", ".tsv"):
        # a CSV has no null: these spellings of "missing" are missing labels, never classes
        df = df.with_columns(pl.when(pl.col("label").str.strip_chars().is_in(MISSING_LABEL_MARKERS))
                             .then(None).otherwise(pl.col("label")).alias("label"))
    return df
