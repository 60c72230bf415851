"""Read MEDI and labelled classification splits into polars frames with canonical columns.

Hub sources go through `snapshot_download`, so one code path serves online runs and a pre-filled (offline)
Hub cache; `find_split` then finds a split's files in whichever layout the snapshot uses (see there), and
`datasets`' packaged readers (json, csv, parquet) read them: a loading script is never executed. Every
error names the source and what was expected.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import polars as pl
import yaml

from pipeline.common.retry import BudgetSpent, RetryBudget
from pipeline.common.text import canonical_label, front_matter
from pipeline.config import SAMPLE_DIR, MediSource, TaskSource, is_commit
from pipeline.registry import get_task
from pipeline.schema import MEDI_COLUMNS

log = logging.getLogger(__name__)


class SourceError(ValueError):
    """Bad or unavailable input, with the source named in the message."""


def hub_snapshot(repo_id: str, revision: str, cache_dir: Path | None = None, local_files_only: bool = False,
                 budget: RetryBudget | None = None) -> Path:
    """The local folder of `repo_id@revision`, downloaded or read from the Hub cache. Connection errors,
    timeouts, 429 and 5xx are retried within `budget` (none: not retried); everything else fails at once."""
    from huggingface_hub import snapshot_download
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RevisionNotFoundError

    offline = local_files_only or constants.HF_HUB_OFFLINE
    where = cache_dir or constants.HF_HUB_CACHE
    def download() -> str:
        return snapshot_download(repo_id, repo_type="dataset", revision=revision, cache_dir=cache_dir,
                                 local_files_only=offline)

    try:
        return Path(budget.call(f"download {repo_id}@{revision}", download) if budget else download())
    except BudgetSpent as exc:
        raise SourceError(f"{exc}; check the network (or HF_ENDPOINT), or raise network.retry_budget_s") from None
    except (LocalEntryNotFoundError, FileNotFoundError) as exc:
        raise SourceError(
            f"{repo_id}@{revision}: this revision is not in the offline Hub cache at {where} "
            f"(HF_HUB_OFFLINE={int(bool(offline))}); download it once online or point HF_HUB_CACHE at a cache "
            f"that holds it ({type(exc).__name__})"
        ) from None
    except RevisionNotFoundError:
        raise SourceError(f"{repo_id}@{revision}: revision not found on the Hub") from None
    except HfHubHTTPError as exc:
        raise SourceError(f"{repo_id}@{revision}: Hub request failed: {exc}") from None


def pin(src: TaskSource | MediSource) -> tuple[str, str]:
    """The Hub repo and revision a source reads: a task's own override, else the registry's pin."""
    if isinstance(src, TaskSource):
        task = get_task(src.name)
        return task.hub_id, src.revision or task.revision
    return src.repo_id, src.revision


def snapshot(src: TaskSource | MediSource, budget: RetryBudget | None = None) -> Path:
    """The source's snapshot folder; a source given its own `cache_dir` is read from it offline."""
    repo_id, revision = pin(src)
    return hub_snapshot(repo_id, revision, src.cache_dir, local_files_only=src.cache_dir is not None, budget=budget)


def is_local(src: TaskSource | MediSource) -> bool:
    """A source read from a file of the user's, not from a Hub snapshot."""
    return src.kind in ("local", "json")


def resolve(src: TaskSource | MediSource, budget: RetryBudget | None = None) -> Path | None:
    """The snapshot folder a Hub source reads (None for a local file). A stage resolves it once and hands it to
    `source_identity`, the loader and the provenance, so that with a moving ref (`main`) its fingerprint, its
    rows and its card name the same commit, and online the Hub is asked once, not three times."""
    return None if is_local(src) else snapshot(src, budget)


def snapshot_folder(src: TaskSource | MediSource, budget: RetryBudget | None, folder: Path | None) -> Path:
    """The folder a stage already resolved (`resolve`), else the source's snapshot, resolved now."""
    return folder if folder is not None else snapshot(src, budget)


def source_identity(src: TaskSource | MediSource, budget: RetryBudget | None = None,
                    folder: Path | None = None) -> dict:
    """What a source's content is pinned to, for fingerprints: the resolved Hub commit (a branch name moves;
    the commit does not), or a local file's path, size and modification time."""
    if isinstance(src, TaskSource) and src.kind == "local":
        return {"file": _file_identity(src.path), "test": _file_identity(src.test_path) if src.test_path else {}}
    if isinstance(src, MediSource) and src.kind == "json":
        return {"file": _file_identity(src.path)}
    return {"hub": pin(src)[0], "commit": snapshot_folder(src, budget, folder).name}


def _file_identity(path: Path | None) -> dict:
    if path is None:
        return {}
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


# How CSV/TSV files spell a missing value (pandas' and R's convention): such a label is `missing_label`.
MISSING_LABEL_MARKERS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]

# Data files the packaged readers take, by extension (a `.gz` suffix is read through).
_READERS = {".parquet": "parquet", ".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".tsv": "csv"}
LAYOUTS = ("the card's `configs:` data_files (README.md)", "per-config folder `<config>/<split>.<ext>` or "
           "`<config>/<split>-*.parquet`", "the Hub's parquet conversion `<config>/<split>/*.parquet`",
           "root-level `<split>.<ext>` or `data/<split>-*` (config-less repos)")


@dataclass(frozen=True)
class SplitFiles:
    """Where a split's data sits in a snapshot, and which layout found it."""

    layout: str
    files: tuple[Path, ...]


def _ext(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    return Path(name).suffix


def _repo_roots(folder: Path) -> tuple[Path, ...]:
    """Where a snapshot's files may really live: the snapshot itself and, in the Hub cache layout
    (`<repo>/snapshots/<sha>`), that repo's `blobs/`, which its files link into. Nothing else: not a
    neighbouring repo of the same cache, not the rest of the disk."""
    folder = Path(folder)
    roots = [folder.resolve()]
    if folder.parent.name == "snapshots":
        roots.append((folder.parent.parent / "blobs").resolve())
    return tuple(roots)


def _inside(path: Path, folder: Path, source: str, what: str) -> Path:
    """`path`, if it resolves (symlinks followed) inside the snapshot or its repo's blobs; else a SourceError:
    a source's card or links must never make gistforge read another repo's (or the host's) files."""
    real = Path(path).resolve()
    if not any(real.is_relative_to(root) for root in _repo_roots(folder)):
        raise SourceError(f"{source}: {what} resolves to {real}, outside the snapshot {folder} and its repo's "
                          "blobs/: refused; a source may read only its own files (remove the link, or fix the card)")
    return path


def _data_files(paths, folder: Path, source: str) -> list[Path]:
    found = sorted({p for p in paths if p.is_file() and _ext(p) in _READERS})
    return [_inside(p, folder, source, f"data file {p.relative_to(folder).as_posix()!r}") for p in found]


def _card_line(folder: Path, pattern: object) -> str:
    """`README.md line N`: where the card names `pattern`, for an error the user can act on."""
    lines = (folder / "README.md").read_text(encoding="utf-8", errors="replace").splitlines()
    n = next((i for i, line in enumerate(lines, 1) if str(pattern) in line), None)
    return f"README.md line {n}" if n else "README.md"


def _card_glob(folder: Path, pattern: object, source: str) -> list[Path]:
    """The files a card's `data_files` pattern matches; an absolute or `..` pattern is refused, never globbed
    (`Path.glob` would follow it out of the snapshot, or crash on an absolute one)."""
    if not isinstance(pattern, str) or not pattern.strip():
        why = "is not a path pattern"
    elif PurePosixPath(pattern).is_absolute() or PureWindowsPath(pattern).is_absolute() or \
            PureWindowsPath(pattern).drive or pattern.startswith(("/", "\\", "~")):
        why = "is absolute"
    elif ".." in PurePosixPath(pattern).parts or ".." in PureWindowsPath(pattern).parts:
        why = "climbs out with '..'"
    else:
        return list(folder.glob(pattern))
    raise SourceError(f"{source}: {_card_line(folder, pattern)}: data_files pattern {pattern!r} {why}: refused; "
                      "a card may name only files inside its own snapshot (a path relative to the repo root, no '..')")


def _card_configs(folder: Path, source: str) -> list[dict]:
    card = folder / "README.md"
    if not card.is_file():
        return []
    _inside(card, folder, source, "README.md")
    text = front_matter(card.read_text(encoding="utf-8", errors="replace"))
    if text is None:
        return []
    try:
        meta = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return []
    configs = meta.get("configs") if isinstance(meta, dict) else None
    return [c for c in configs if isinstance(c, dict)] if isinstance(configs, list) else []


def _card_patterns(entry: dict, split: str) -> list[str]:
    """The path patterns a card config gives for `split` (a bare pattern or list means the train split)."""
    files = entry.get("data_files")
    if isinstance(files, (str, list)) and not (isinstance(files, list) and files and isinstance(files[0], dict)):
        return ([files] if isinstance(files, str) else list(files)) if split == "train" else []
    if isinstance(files, dict):
        files = [{"split": k, "path": v} for k, v in files.items()]
    patterns: list[str] = []
    for item in files or []:
        if isinstance(item, dict) and item.get("split") == split:
            path = item.get("path")
            patterns += list(path) if isinstance(path, list) else [path] if path is not None else []
    return patterns


def find_split(folder: Path, config: str | None, split: str, source: str | None = None) -> SplitFiles | None:
    """A split's files, by the first layout that has them (the order of `LAYOUTS`); None when none does.
    Every file found must resolve inside the snapshot (or its repo's blobs/), else a SourceError."""
    folder = Path(folder)
    source = source or f"snapshot {folder}"
    wanted = config or "default"
    for entry in _card_configs(folder, source):
        if entry.get("config_name", "default") == wanted:
            files = _data_files((p for pattern in _card_patterns(entry, split)
                                 for p in _card_glob(folder, pattern, source)), folder, source)
            if files:
                return SplitFiles(LAYOUTS[0], tuple(files))
    if config:
        sub = folder / config
        files = _data_files([*sub.glob(f"{split}.*"), *sub.glob(f"{split}-*.parquet")], folder, source)
        if files:
            return SplitFiles(LAYOUTS[1], tuple(files))
    files = _data_files((folder / wanted / split).glob("*.parquet"), folder, source)
    if files:
        return SplitFiles(LAYOUTS[2], tuple(files))
    if config is None:
        files = _data_files([*folder.glob(f"{split}.*"), *(folder / "data").glob(f"{split}-*"),
                             *(folder / "data").glob(f"{split}.*")], folder, source)
        if files:
            return SplitFiles(LAYOUTS[3], tuple(files))
    return None


def load_split(folder: Path, source: str, config: str | None, split: str) -> pl.DataFrame:
    """Read one split of a snapshot; an error lists the layouts tried and the files the snapshot holds."""
    return pl.from_arrow(split_dataset(folder, source, config, split).data.table)


def split_dataset(folder: Path, source: str, config: str | None, split: str):
    """One split of a snapshot as a `datasets.Dataset` (what `load_split` and the MTEB evaluation read)."""
    import datasets

    found = find_split(folder, config, split, source)
    if found is None:
        held = sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*")
                      if p.is_file() and not p.name.startswith("."))
        shown = ", ".join(held[:40]) + (f" (+{len(held) - 40} more)" if len(held) > 40 else "")
        tried = "; ".join(LAYOUTS if config else [LAYOUTS[0], LAYOUTS[2], LAYOUTS[3]])
        raise SourceError(f"{source}: no data file for split {split!r} (config {config!r}) in the snapshot; "
                          f"layouts tried: {tried}; the snapshot holds: {shown or 'no files'}")
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


def _is_sample(cache_dir: Path | str | None) -> bool:
    """Whether a source reads the sample shipped in the package (the card says so), not a real cache."""
    return bool(cache_dir) and Path(cache_dir).resolve().is_relative_to(SAMPLE_DIR.resolve())


def card_license(folder: Path) -> str | None:
    """The `license` a snapshot's own dataset card (README.md front matter) declares, if any."""
    card = folder / "README.md"
    if not card.is_file():
        return None
    _inside(card, folder, f"snapshot {folder}", "README.md")
    try:
        from huggingface_hub import DatasetCard

        value = DatasetCard.load(card).data.get("license")
    except Exception as exc:  # noqa: BLE001 - an unreadable card only means no licence from it
        log.warning("%s: cannot read its licence (%s)", card, exc)
        return None
    if isinstance(value, list):
        value = ", ".join(map(str, value))
    return str(value) if value else None


def _license(found: str | None, fallback: str | None, fallback_from: str) -> dict:
    if found:
        return {"license": found, "license_from": "the source's dataset card"}
    if fallback:
        return {"license": fallback, "license_from": fallback_from}
    return {"license": "unknown", "license_from": "not declared by the source's card, the registry or the config"}


def _hub_provenance(src: TaskSource | MediSource, folder: Path, fallback: str | None, fallback_from: str) -> dict:
    revision = pin(src)[1]
    return {"revision": revision, "commit": folder.name, "moving_ref": not is_commit(revision),
            **_license(card_license(folder), fallback, fallback_from)}


def describe_task_source(src: TaskSource, budget: RetryBudget | None = None, folder: Path | None = None) -> dict:
    """Provenance of a task source for the dataset card: where, at which resolved commit, under which licence."""
    if src.kind == "local":
        return {"task": src.name, "kind": "local", "path": src.path.name if src.path else None,
                "columns": {"text": src.text_column, "label": src.label_column},
                **_license(None, src.license, "the build config")}
    task = get_task(src.name)
    fallback, fallback_from = (src.license, "the build config") if src.license else (task.license, "the registry")
    return {"task": src.name, "kind": "hub", "repo_id": task.hub_id, "config": task.config, "split": task.split,
            "sample": _is_sample(src.cache_dir),
            **_hub_provenance(src, snapshot_folder(src, budget, folder), fallback, fallback_from)}


def load_task_split(src: TaskSource, budget: RetryBudget | None = None, folder: Path | None = None) -> pl.DataFrame:
    """The train split of one labelled task, as `text, label, label_text`."""
    if src.kind == "local":
        source = f"local task {src.name} ({src.path})"
        raw = read_local(Path(src.path), source)
    else:
        task = get_task(src.name)
        source = f"{src.name} ({'@'.join(pin(src))})"
        raw = load_split(snapshot_folder(src, budget, folder), source, task.config, task.split)
    if raw.height == 0:
        raise SourceError(f"{source}: the source is empty (0 rows)")
    log.info("loaded %s rows from %s", raw.height, source)
    df = labelled_frame(raw, src, source)
    if src.kind == "local" and Path(src.path).suffix.lower() in (".csv", ".tsv"):
        # a CSV has no null: these spellings of "missing" are missing labels, never classes
        df = df.with_columns(pl.when(pl.col("label").str.strip_chars().is_in(MISSING_LABEL_MARKERS))
                             .then(None).otherwise(pl.col("label")).alias("label"))
    return df


_MEDI_CHUNK = 8_192  # rows gathered as Python strings before they become one polars frame
_JSON_TYPES = {"start_map": "dict", "string": "str", "boolean": "bool", "null": "NoneType"}


def _medi_records(f, source: str):
    """The records of a top-level JSON list, one at a time (`ijson`): the 1.4M-row file is never held parsed
    whole, as `json.loads` did (a Python object per value, several times the file's size)."""
    import ijson

    if f.read(3) != b"\xef\xbb\xbf":
        f.seek(0)
    events = ijson.parse(f, use_float=True)
    first = next(events)
    if first[1] != "start_array":
        found = _JSON_TYPES.get(first[1]) or type(first[2]).__name__
        raise SourceError(f"{source}: expected a JSON list of triplet objects, found {found}")
    return ijson.items(itertools.chain([first], events), "item")


def _medi_row(i: int, rec: object, cols: dict[str, list], source: str) -> None:
    """Append one MEDI record to `cols`, or a SourceError naming the row."""
    if not isinstance(rec, dict):
        raise SourceError(f"{source}: row {i}: expected an object, found {type(rec).__name__}")
    for key in ("query", "pos", "neg"):
        pair = rec.get(key)
        if not (isinstance(pair, list) and len(pair) == 2 and all(v is None or isinstance(v, str) for v in pair)):
            raise SourceError(f"{source}: row {i}: {key!r} must be an [instruction, text] pair, found {pair!r:.80}")
        cols[f"{key}_instruct"].append(pair[0])
        cols[key].append(pair[1])
    task = rec.get("task_name", rec.get("task_id"))
    if task is None:
        raise SourceError(f"{source}: row {i}: needs 'task_name' or 'task_id'")
    cols["task_name"].append(str(task))


def _medi_json(path: Path, source: str) -> pl.DataFrame:
    import ijson

    schema = {c: pl.String for c in MEDI_COLUMNS}
    frames: list[pl.DataFrame] = []
    cols: dict[str, list] = {c: [] for c in MEDI_COLUMNS}
    i = -1
    try:
        with open(path, "rb") as f:
            for i, rec in enumerate(_medi_records(f, source)):
                _medi_row(i, rec, cols, source)
                if len(cols["query"]) == _MEDI_CHUNK:
                    frames.append(pl.DataFrame(cols, schema=schema))
                    cols = {c: [] for c in MEDI_COLUMNS}
    except (OSError, ijson.JSONError, UnicodeDecodeError) as exc:
        where = f" after row {i}" if i >= 0 else ""
        raise SourceError(f"{source}: cannot read {path} as JSON{where}: {_first_line(exc)}") from None
    frames.append(pl.DataFrame(cols, schema=schema))
    return pl.concat(frames)


def _first_line(exc: Exception) -> str:
    """A parser's message on one line (yajl's spans three, with a caret, sometimes as bytes)."""
    msg = exc.args[0] if exc.args else exc
    msg = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
    return (msg.strip().splitlines() or [type(exc).__name__])[0].strip()


def load_medi(src: MediSource, budget: RetryBudget | None = None, folder: Path | None = None) -> pl.DataFrame:
    """MEDI triplets with the `avsolatorio/medi-data` columns."""
    if src.kind == "json":
        source = f"MEDI json ({src.path})"
        df = _medi_json(Path(src.path), source)
    else:
        source = f"MEDI ({'@'.join(pin(src))})"
        df = load_split(snapshot_folder(src, budget, folder), source, None, "train")
    if df.height == 0:
        raise SourceError(f"{source}: the source is empty (0 rows)")
    _require(df, {c: c for c in MEDI_COLUMNS}, source)
    return pl.DataFrame({c: _string_column(df, c, source) for c in MEDI_COLUMNS})


def describe_medi_source(src: MediSource, budget: RetryBudget | None = None, folder: Path | None = None) -> dict:
    """Provenance of MEDI for the dataset card (as `describe_task_source`)."""
    if src.kind == "json":
        return {"kind": "json", "path": Path(src.path).name, **_license(None, src.license, "the build config")}
    return {"kind": "hub", "repo_id": src.repo_id, "sample": _is_sample(src.cache_dir),
            **_hub_provenance(src, snapshot_folder(src, budget, folder), src.license, "the build config")}
