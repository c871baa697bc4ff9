"""``DEST/index.jsonl``: one line per tracked file, for pandas and jq.

Rewritten atomically after a run that changed a record (or when it is missing, or the
previous run was killed), from the state database a batch at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ohpub.local.state import OHPUB_DIR, StateDB
from ohpub.local.tree import write_atomic

INDEX_NAME = "index.jsonl"


def index_record(fs: Any) -> dict[str, Any]:
    """The index line of one tracked file: the API record plus where and what it is."""
    rec = dict(fs.raw)
    rec.update(
        {
            "project_id": fs.project_id,
            "datatype_ids": fs.datatype_ids,
            "username": fs.username,
            "path": fs.path,
            "bytes": fs.size,
            "sha256": fs.sha256,
            "md5": fs.md5,
            "status": str(fs.status),
        }
    )
    return rec


def write_index(dest: Path, state: StateDB) -> None:
    """Rewrite DEST/index.jsonl atomically: a temporary file in ``.ohpub``, fsync, rename,
    with no symlink below DEST followed (tree.write_atomic)."""
    lines = (
        (json.dumps(index_record(fs), ensure_ascii=False) + "\n").encode()
        for fs in state.iter_all()
    )
    write_atomic(dest, INDEX_NAME, lines, tmp_relpath=f"{OHPUB_DIR}/{INDEX_NAME}.tmp")


def read_index(dest: Path) -> Iterator[dict[str, Any]]:
    """The records of DEST/index.jsonl, one dict per line."""
    with open(dest / INDEX_NAME, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


__all__ = ["INDEX_NAME", "index_record", "write_index", "read_index"]
