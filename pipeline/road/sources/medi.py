"""MEDI's own JSON file (a top-level list of `{query, pos, neg: [instruction, text], task_name}` objects),
streamed, and MEDI from a Hub snapshot, both as the `avsolatorio/medi-data` columns."""

from __future__ import annotations

import itertools
from pathlib import Path

import polars as pl

from pipeline.common.retry import RetryBudget
from pipeline.config import MediSource
from pipeline.road.sources.hub import SourceError
from pipeline.road.sources.readers import _require, _string_column, load_split
from pipeline.road.sources.resolved import ResolvedSource, resolved
from pipeline.schema import MEDI_COLUMNS

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


def load_medi(source: MediSource | ResolvedSource, budget: RetryBudget | None = None) -> pl.DataFrame:
    """MEDI triplets with the `avsolatorio/medi-data` columns."""
    found = resolved(source, budget)
    source = found.label
    if found.folder is None:
        df = _medi_json(Path(found.source.path), source)
    else:
        df = load_split(found, *found.train_split)
    if df.height == 0:
        raise SourceError(f"{source}: the source is empty (0 rows)")
    _require(df, {c: c for c in MEDI_COLUMNS}, source)
    return pl.DataFrame({c: _string_column(df, c, source) for c in MEDI_COLUMNS})
