"""gistforge's library: the road from sources to a fine-tuned encoder, with no Dagster in it.

    road/sources → clean → decontaminate → ingest → embed → search → mine → card → checks → build
         → publish → train → evaluate

Each module of `road/` imports only modules before it. A stage is one function in its module: it takes a
`Workspace` and narrow, named settings, declares what its output depends on in a `StageSpec`, and returns a
typed report. Around the road: `config` (typed configuration and profiles), `registry` (MTEB tasks and
pins), `task_types` (the `task_type` rule), `schema` (the published row schema), `workspace` (paths, atomic IO, reuse), `upstream` (pin
freshness) and `common/` (atomic writes, row accounting, text keys, kill points, plots).
"""
