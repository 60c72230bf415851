"""Helpers every stage of the road uses: atomic writes, row accounting, text keys, kill points, plots.

Nothing here knows about a stage; nothing here imports `pipeline.road`.
"""
