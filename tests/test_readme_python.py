"""Every Python example in the README runs, as written, against the local server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def test_the_readme_has_python_examples() -> None:
    assert BLOCKS, "the README's Python API section lost its examples"


@pytest.mark.parametrize("code", BLOCKS, ids=[f"example{i}" for i in range(len(BLOCKS))])
def test_readme_python_example_runs(oh176: Any, tmp_path: Path, code: str) -> None:
    if "import pandas" in code:
        pytest.importorskip("pandas")
    # As written: the server's files hold what their names promise (JSON for .json), so
    # the example parses the newest one as a person would (issue 21: it crashed on bytes).
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "OHPUB_BASE_URL": oh176.base_url, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    if "ohpub.mirror(" in code:
        assert (tmp_path / "spotify").is_dir()
        assert "True 31 downloaded" in res.stdout
    if "json.loads(" in code:
        assert re.search(r"^list \d+ records$", res.stdout, re.M), res.stdout
    if "ohpub.status(" in code:
        assert "stale: False" in res.stdout
        assert "{'ok': 31, 'modified': 0, 'missing': 0, 'untracked': 0}" in res.stdout
