"""Read MEDI and labelled classification splits into polars frames with canonical columns.

Hub sources go through `snapshot_download` (`hub`), so one code path serves online runs and a pre-filled
(offline) Hub cache; `layouts.find_split` finds a split's files in whichever layout the snapshot uses, and
`readers` reads them. `provenance` says where a source came from, for the card; `medi` reads MEDI's JSON.
"""

from pipeline.road.sources.hub import (SourceError, hub_snapshot, is_local, pin, resolve, snapshot, snapshot_folder,
                                       source_identity)
from pipeline.road.sources.layouts import LAYOUTS, Layout, SplitFiles, find_split
from pipeline.road.sources.medi import load_medi
from pipeline.road.sources.provenance import card_license, describe_medi_source, describe_task_source
from pipeline.road.sources.readers import (MISSING_LABEL_MARKERS, labelled_frame, load_split, load_task_split,
                                           normalised_labels, read_local, split_dataset)

__all__ = ["LAYOUTS", "MISSING_LABEL_MARKERS", "Layout", "SourceError", "SplitFiles", "card_license",
           "describe_medi_source", "describe_task_source", "find_split", "hub_snapshot", "is_local", "labelled_frame",
           "load_medi", "load_split", "load_task_split", "normalised_labels", "pin", "read_local", "resolve",
           "snapshot", "snapshot_folder", "source_identity", "split_dataset"]
