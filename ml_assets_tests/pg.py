"""A real PostgreSQL server for tests: Debian's binaries, a cluster in a temporary folder, loopback only.

`running_postgres` runs `initdb` and `pg_ctl start` on a free port, with password authentication
(scram-sha-256) so the URLs tests use carry a password, and its unix socket in the cluster's own
folder; it stops the server and deletes the folder on exit. As root (CI containers), the server runs
as Debian's `postgres` user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ml_assets_tests.service import free_port

USER, PASSWORD = "ml_assets", "s3cret-pw"
INSTALL = "sudo apt-get install -y postgresql"


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (/usr/lib/postgresql/N/bin), or None."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


@dataclass(frozen=True)
class Postgres:
    bin: Path
    port: int
    run_as: str | None

    def url(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name)
        return self.url(name)

    def _run(self, tool: str, *args: str) -> None:
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        done = subprocess.run(
            [str(self.bin / tool), *args], env=env, user=self.run_as, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stdout}{done.stderr}")


@contextmanager
def running_postgres(bin_dir: Path) -> Iterator[Postgres]:
    """A fresh cluster started with `bin_dir`'s initdb and pg_ctl; stopped and deleted on exit."""
    run_as = "postgres" if os.geteuid() == 0 else None
    # a folder of its own in /tmp: as root, pytest's tmp folders are closed to the postgres user
    root = Path(tempfile.mkdtemp(prefix="ml-assets-pg-"))
    data, pwfile = root / "data", root / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    if run_as:
        user = pwd.getpwnam(run_as)
        os.chown(root, user.pw_uid, user.pw_gid)
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    server = Postgres(bin_dir, free_port(), run_as)
    # durability is no concern for a test cluster: fsync off keeps its writes off the shared disk
    options = (
        f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off"
    )
    try:
        server._run(
            "initdb", "-D", str(data), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8"
        )
        server._run(
            "pg_ctl", "start", "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "-t", "60"
        )
    except RuntimeError as exc:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"{exc}\n{log[-3000:]}") from None
    try:
        yield server
    finally:
        try:
            server._run("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w", "-t", "60")
        finally:
            shutil.rmtree(root, ignore_errors=True)
