"""The thin Dagster layer: one module per stage of the graph, each calling plain functions in core/."""
