"""`LocalEngine` (in this process) and `RayEngine` (Ray tasks): the same `map_shards` over shards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol, TypeVar

from ml_assets.core.settings import EngineSettings

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")
RAY_INSTALL = "pip install -e '.[ray]'"


class Engine(Protocol):
    """Runs a shard function over every player shard of a job."""

    @property
    def shards(self) -> int: ...

    @property
    def distributed(self) -> bool: ...

    def map_shards(self, fn: Callable[[JobT, int], ResultT], job: JobT) -> list[ResultT]:
        """`fn(job, shard)` for shard 0 .. shards - 1, results in shard order; the first failure raises."""
        ...


@dataclass(frozen=True)
class LocalEngine:
    """Shards one after the other in this process (tests and the projection's per-shard times)."""

    shards: int = 1
    distributed: bool = False

    def map_shards(self, fn: Callable[[JobT, int], ResultT], job: JobT) -> list[ResultT]:
        return [fn(job, shard) for shard in range(self.shards)]


@dataclass(frozen=True)
class RayEngine:
    """Shards as Ray tasks on the cluster at `address` (Ray's rules: "" = $RAY_ADDRESS or a new local
    Ray, "auto", "ray://host:10001"). A failed task raises its own error here, so the step fails."""

    address: str = ""
    shards: int = 2
    distributed: bool = True

    def map_shards(self, fn: Callable[[JobT, int], ResultT], job: JobT) -> list[ResultT]:
        ray = _ray()
        if not ray.is_initialized():
            # workers log to the cluster's own files; the driver keeps its console for Dagster
            ray.init(address=self.address or None, log_to_driver=False, configure_logging=False)
        # an error in a task is not retried (Ray retries only crashed workers): it fails the step
        task = ray.remote(num_cpus=1)(fn)
        shared = ray.put(job)  # one copy in the object store, not one per task
        return list(ray.get([task.remote(shared, shard) for shard in range(self.shards)]))


def _ray() -> ModuleType:
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError(f"[engine] kind = 'ray' needs Ray: {RAY_INSTALL}") from exc
    return ray


def engine_for(settings: EngineSettings) -> Engine:
    """The engine `[engine]` names."""
    if settings.kind == "ray":
        return RayEngine(settings.address, settings.shards)
    return LocalEngine()
