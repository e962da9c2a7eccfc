"""Plain, typed domain functions over Polars frames. Nothing in this package imports Dagster."""
