"""Shared test helpers: run the CLI in-process (typer's CliRunner) against a server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from ohpub.cli.main import app


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes


def run_cli(
    server: Any,
    args: list[str],
    *,
    base_url: str | None = None,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
) -> CliResult:
    """Invoke ``ohpub ARGS`` with OHPUB_BASE_URL pointing at the test server."""
    url = base_url or (server.base_url if server is not None else "http://127.0.0.1:9")
    full_env = {"OHPUB_BASE_URL": url, "NO_COLOR": "1", "COLUMNS": "200"}
    full_env.update(env or {})
    result = CliRunner().invoke(app, args, env=full_env, input=input, catch_exceptions=False)
    return CliResult(
        code=result.exit_code,
        stdout=result.stdout,
        stderr=result.stderr,
        stdout_bytes=result.stdout_bytes,
    )


def content_of(server: Any, file_id: int) -> bytes:
    """The exact bytes the server stores for a file."""
    return bytes(server.content(file_id))


def tree(dest: Any) -> dict[str, bytes]:
    """Every file under DEST except ohpub's own, as relative path -> bytes."""
    from pathlib import Path

    root = Path(dest)
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(".ohpub") or rel == "index.jsonl" or not p.is_file():
            continue
        out[rel] = p.read_bytes()
    return out


# -- helpers of the reliability tests (test_faults, test_crash, test_hostile, test_property) --

FAST_RETRY = {"OHPUB_RETRY_BASE": "0.01", "OHPUB_RETRY_CAP": "0.05"}
"""Backoff of a few milliseconds, so retry tests stay fast (the attempt count is unchanged)."""


def jsonl(text: str) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in text.splitlines() if line.strip()]


def add_big_file(server: Any, size: int, *, seed: int = 3, basename: str = "big.bin") -> int:
    """A synthetic file of ``size`` bytes by alice in project 600 ("Big Files")."""
    from tests.ohserver import SyntheticContent

    with server._lock:
        if 600 not in server._projects:
            server.add_project(600, "Big Files")
    return int(
        server.add_file(
            basename=basename,
            content=SyntheticContent(size, seed=seed),
            project_id=600,
            username="alice",
        )
    )


def storage_gets_of(server: Any, file_id: int) -> list[Any]:
    """Storage GETs of one file, in the order they ended (matched by its storage uuid)."""
    uuid = server.file(file_id).storage_uuid
    return [
        e for e in list(server.log) if e.role == "storage" and e.method == "GET" and uuid in e.path
    ]


REPO = Path(__file__).resolve().parent.parent


def start_mirror(
    server: Any,
    dest: Path,
    *args: str,
    preexec: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """A real ``ohpub mirror`` process (for kill and signal tests), with fast retries."""
    env = {**os.environ, **FAST_RETRY, "OHPUB_BASE_URL": server.base_url, "NO_COLOR": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ohpub", "mirror", str(dest), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
        preexec_fn=preexec,
    )


def handlers_installed(pid: int) -> bool:
    """ohpub's signal handlers are in place in process ``pid``: it catches SIGTERM (Python
    alone does not). Read from ``/proc``; False where there is none."""
    import signal

    try:
        with open(f"/proc/{pid}/status") as fh:
            caught = next(ln for ln in fh if ln.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
