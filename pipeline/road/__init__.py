"""The data's road, one module per step, in order: each module imports only modules before it.

A stage is one function in its module: it takes a `Workspace` and narrow, named settings, declares what
its output depends on in a `StageSpec`, and returns a typed report. `stages`, last, calls every stage with a
build configuration's settings (`Road`): the one wiring the assets, `gistforge plan`, tests and benchmarks share.
"""

ROAD = ("sources", "clean", "decontaminate", "ingest", "model_ref", "agreement", "openvino_guide", "precision", "embedding_cache", "embed", "search", "deep_search", "label_noise", "mined", "miner", "mine", "grouped", "layout", "facts", "card", "checks", "build",
        "publish", "versioning", "local_hub", "hub_publisher", "train", "rounds", "evaluate",
        "stages")
