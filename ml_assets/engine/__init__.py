"""Where the heavy per-player steps run: in this process, or as Ray tasks over player shards.

Plain Python, no Dagster: the Dagster layer only picks the engine from `[engine]` settings
(`engine_for`). A shard runs the same core functions as the local path on its players' rows,
writes its Parquet files into the table folder and returns their add actions; the driver makes
the one Delta commit (`lake.io_manager.WrittenFiles`). Ray is imported only on the Ray path, so
the default install never needs it.
"""
