"""ml-assets: player event logs in, churn predictions out, as one Dagster lineage graph."""

import os

__version__ = "0.1.0"

# Polars allocates through jemalloc, which by default keeps freed pages for 10 s before returning
# them to the OS. Steps that work in pieces then hold far more than one piece: cleaning 10M events a
# week at a time peaked at 2.05 GiB with the default and 1.54 GiB at 100 ms, for ~4% more time.
# jemalloc reads this when Polars first allocates, so it must be set before Polars is imported
# (ml_assets' entry points import this package first); a value set by the user wins.
ALLOCATOR_CONF = "dirty_decay_ms:100,muzzy_decay_ms:0"
os.environ.setdefault("_RJEM_MALLOC_CONF", ALLOCATOR_CONF)
