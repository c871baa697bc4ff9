#!/usr/bin/env python3
"""The rooms over the size the guide allows: functions over 60 lines, classes over 250.

``python3 scripts/room_sizes.py [DIR]`` (default ``ohpub``) prints each one as
``path:line kind name lines`` and exits 1 when there is any; lines run from the ``def`` or
``class`` line to the last line of its body (decorators not counted). Stdlib only.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LIMITS = {"function": 60, "class": 250}


def oversized(root: Path) -> list[str]:
    rows = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ClassDef):
                kind = "class"
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                kind = "function"
            else:
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > LIMITS[kind]:
                rows.append(f"{path}:{node.lineno} {kind} {node.name} {lines}")
    return rows


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path("ohpub")
    rows = oversized(root)
    for row in rows:
        print(row)
    print(f"room_sizes: {len(rows)} over the limits (functions 60 lines, classes 250)",
          file=sys.stderr)
    return 1 if rows else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
