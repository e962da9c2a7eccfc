"""A real S3-compatible server for tests: moto's server mode in its own process on a loopback port.

`s3_server` starts `moto_server`, makes a bucket, and points the standard AWS environment at it
(the variables delta-rs, Polars and obstore all read), as a studio's deployment would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ml_assets_tests.conftest import require
from ml_assets_tests.service import free_port

BUCKET = "studio-lake"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    env: dict[str, str]

    def uri(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"


def _moto_server() -> str | None:
    exe = Path(sys.executable).with_name("moto_server")
    return str(exe) if exe.exists() else shutil.which("moto_server")


@contextmanager
def s3_server(log_dir: Path) -> Iterator[S3Server]:
    """moto_server on a free port with one bucket; the AWS_* environment points at it meanwhile."""
    try:
        import obstore  # noqa: F401
    except ModuleNotFoundError:
        require(False, "obstore (the s3 extra)", "pip install -e '.[s3,test]'")
    exe = _moto_server()
    if exe is None:
        require(False, "moto_server", "pip install -e '.[test]'")
    assert exe is not None
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = (log_dir / "moto.log").open("wb")
    process = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    env = {
        "AWS_ACCESS_KEY_ID": "studio",
        "AWS_SECRET_ACCESS_KEY": "studio-secret",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                # moto creates a bucket on an anonymous PUT of its name (path-style)
                request = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")
                urllib.request.urlopen(request, timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    text = (log_dir / "moto.log").read_text()
                    raise RuntimeError(f"moto_server did not start: {text}") from None
                time.sleep(0.2)
        os.environ.update(env)
        yield S3Server(endpoint, env)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
