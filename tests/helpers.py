"""Shared test helpers: run the CLI in-process (typer's CliRunner) against a server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from typer.testing import CliRunner

from ohpub.cli import app


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
