"""The lake's plain files (landing batches, the model store, a Delta table's data files before their
commit), in a local folder or under an object-store prefix, behind one small interface.

A local folder does what the embedded default always did: a file appears by a rename, so a reader
sees the old file or the whole new one, and `durable` fsyncs the file and its folder. Under an
object-store URI (`s3://bucket/prefix`) a PUT is atomic and durable once acknowledged; `create` is
a conditional put (If-None-Match) and `update` a compare-and-swap on the ETag (If-Match): the same
primitives delta-rs commits with, so no lock service is needed.

Object-store access goes through `obstore` (the `s3` extra), the Python binding of the Rust
`object_store` crate that delta-rs and Polars use too. All three read the standard AWS environment
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`),
so credentials never pass through settings or a run's config.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

Location = str | os.PathLike[str]
S3_EXTRA = "pip install -e '.[s3]'"


def is_local(location: Location) -> bool:
    """Whether `location` is a local folder (a plain path or a file:// URI)."""
    text = os.fspath(location)
    return "://" not in text or text.startswith("file://")


def join(location: Location, name: str) -> str:
    """`name` under `location`, as a path or URI string."""
    return f"{os.fspath(location).rstrip('/')}/{name}"


@dataclass(frozen=True)
class Entry:
    """One file of a folder: its name relative to the folder, the URI readers open it by, its
    modification time (seconds since the epoch) and size."""

    name: str
    uri: str
    mtime: float
    size: int


class Folder(Protocol):
    """What the lake needs of a folder of files."""

    uri: str

    def exists(self, name: str) -> bool: ...

    def read(self, name: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        ...

    def write(self, name: str, data: bytes, durable: bool = False) -> None:
        """Replace the file atomically (readers see the old bytes or the new, never a mix)."""
        ...

    def create(self, name: str, data: bytes, durable: bool = False) -> bool:
        """Write the file unless it exists (atomically, across processes and machines); False if it did."""
        ...

    def update(self, name: str, change: Callable[[bytes | None], bytes]) -> bytes:
        """Replace the file by `change(old bytes or None)` so no concurrent update is lost; the new bytes."""
        ...

    def list(self, suffix: str = "", recursive: bool = False) -> list[Entry]:
        """The files directly in the folder (or below it) whose names end with `suffix`, by name."""
        ...

    def delete(self, name: str) -> None: ...


class LocalFolder:
    """A folder on local disk."""

    def __init__(self, location: Location) -> None:
        self.path = Path(os.fspath(location).removeprefix("file://"))
        self.uri = str(self.path)

    def exists(self, name: str) -> bool:
        return (self.path / name).exists()

    def read(self, name: str) -> bytes | None:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            return None

    def _aside(self, name: str, data: bytes, durable: bool) -> str:
        """`data` in a temporary file beside `name`'s final place; its path."""
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        return tmp

    def write(self, name: str, data: bytes, durable: bool = False) -> None:
        tmp = self._aside(name, data, durable)
        try:
            os.replace(tmp, self.path / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        if durable:
            fsync_dir((self.path / name).parent)

    def create(self, name: str, data: bytes, durable: bool = False) -> bool:
        tmp = self._aside(name, data, durable)
        try:
            # link(2) fails when the target exists: put-if-absent, atomic even between processes
            os.link(tmp, self.path / name)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        if durable:
            fsync_dir((self.path / name).parent)
        return True

    def update(self, name: str, change: Callable[[bytes | None], bytes]) -> bytes:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / f"{name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            new = change(self.read(name))
            self.write(name, new)
        return new

    def list(self, suffix: str = "", recursive: bool = False) -> list[Entry]:
        if not self.path.exists():
            return []
        found = self.path.rglob(f"*{suffix}") if recursive else self.path.glob(f"*{suffix}")
        out = []
        for path in found:
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed while listing
                continue
            if path.is_file():
                name = path.relative_to(self.path).as_posix()
                out.append(Entry(name, str(path), stat.st_mtime, stat.st_size))
        return sorted(out, key=lambda e: e.name)

    def delete(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)


class ObjectFolder:
    """A prefix of an object store (S3 API), through obstore."""

    def __init__(self, uri: str) -> None:
        try:
            import obstore
            from obstore.store import from_url
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                f"the lake is on an object store ({uri}): install the S3 extra: {S3_EXTRA}"
            ) from exc
        self._obs = obstore
        self.uri = uri.rstrip("/")
        self._store: Any = from_url(self.uri)

    def exists(self, name: str) -> bool:
        try:
            self._obs.head(self._store, name)
        except FileNotFoundError:
            return False
        return True

    def read(self, name: str) -> bytes | None:
        try:
            return bytes(self._obs.get(self._store, name).bytes())
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes, durable: bool = False) -> None:
        self._obs.put(self._store, name, data)

    def create(self, name: str, data: bytes, durable: bool = False) -> bool:
        from obstore.exceptions import AlreadyExistsError

        try:
            self._obs.put(self._store, name, data, mode="create")
        except AlreadyExistsError:
            return False
        return True

    def update(self, name: str, change: Callable[[bytes | None], bytes]) -> bytes:
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        while True:
            try:
                got = self._obs.get(self._store, name)
                old: bytes | None = bytes(got.bytes())
                mode: Any = {"e_tag": got.meta["e_tag"]}
            except FileNotFoundError:
                old, mode = None, "create"
            new = change(old)
            try:
                self._obs.put(self._store, name, new, mode=mode)
                return new
            except (PreconditionError, AlreadyExistsError):
                continue  # another writer got there first: apply the change to its version

    def list(self, suffix: str = "", recursive: bool = False) -> list[Entry]:
        out = []
        for chunk in self._obs.list(self._store):
            for meta in chunk:
                name = str(meta["path"])
                if name.endswith(suffix) and (recursive or "/" not in name):
                    mtime = meta["last_modified"].timestamp()
                    out.append(Entry(name, join(self.uri, name), mtime, int(meta["size"])))
        return sorted(out, key=lambda e: e.name)

    def delete(self, name: str) -> None:
        self._obs.delete(self._store, name)


def folder(location: Location) -> Folder:
    """The folder at `location`: local for a path, else an object-store prefix."""
    return LocalFolder(location) if is_local(location) else ObjectFolder(os.fspath(location))


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a file renamed into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to the local file `path` so that readers see the old file or the whole new one."""
    LocalFolder(path.parent).write(path.name, text.encode())
