"""gistforge's command line (`gistforge build`). The library is `pipeline`, the Dagster layer is `assets`.

Kept outside both: the CLI chooses a configuration and a Dagster instance, then runs the jobs `assets`
defines, in the order `assets.automation.rebuild_plan` gives.
"""
