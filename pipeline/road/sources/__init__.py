"""Read MEDI and labelled classification splits into polars frames with canonical columns.

A stage resolves each source once (`resolve`: its Hub snapshot through `snapshot_download`, so one code path
serves online runs and a pre-filled offline cache; what it is pinned to; its provenance) and hands the
`ResolvedSource` to its fingerprint, its readers and its report. `layouts.find_split` finds a split's files in
whichever layout the snapshot uses, `readers` reads them, `medi` reads MEDI's JSON.
"""

from pipeline.road.sources.hub import SourceError, hub_snapshot, is_local, pin, snapshot
from pipeline.road.sources.layouts import LAYOUTS, Layout, SplitFiles, find_split
from pipeline.road.sources.medi import load_medi
from pipeline.road.sources.provenance import Provenance, card_license, describe
from pipeline.road.sources.readers import (MISSING_LABEL_MARKERS, labelled_frame, load_split, load_task_split,
                                           normalised_labels, read_local, split_dataset)
from pipeline.road.sources.resolved import ResolvedSource, resolve, resolved

__all__ = ["LAYOUTS", "MISSING_LABEL_MARKERS", "Layout", "Provenance", "ResolvedSource", "SourceError", "SplitFiles",
           "card_license", "describe", "find_split", "hub_snapshot", "is_local", "labelled_frame", "load_medi",
           "load_split", "load_task_split", "normalised_labels", "pin", "read_local", "resolve", "resolved",
           "snapshot", "split_dataset"]
