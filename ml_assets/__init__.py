"""ml-assets: player event logs in, churn predictions out, as one Dagster lineage graph."""

__version__ = "0.1.0"
