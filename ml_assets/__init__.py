"""ml-assets: player event logs in, churn predictions out, as one Dagster lineage graph."""

import os

__version__ = "0.1.0"

# Polars allocates through jemalloc and starts it keeping freed pages for 500 ms (then 1 s more as
# "muzzy" pages) before returning them to the OS; it appends `_RJEM_MALLOC_CONF` to those options,
# so later values win. Steps that work in pieces then hold more than one piece: cleaning 10M events
# a week at a time peaked at 2.05 GiB with Polars' setting and 1.54 GiB at 100 ms, for ~4% more
# time (steps that allocate much and briefly, like the feature step, lose up to ~25%). jemalloc reads
# this when Polars is imported, so it must be set first (ml_assets' entry points import this package
# first); a value set by the user wins.
ALLOCATOR_CONF = "dirty_decay_ms:100,muzzy_decay_ms:0"
os.environ.setdefault("_RJEM_MALLOC_CONF", ALLOCATOR_CONF)
