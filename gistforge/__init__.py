"""gistforge's command line. The library is `pipeline`, the Dagster layer is `assets`.

Kept outside `assets` so that the configuration flags can be set before the Dagster definitions (whose
task partitions derive from the configuration) are imported.
"""
