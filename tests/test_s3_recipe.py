"""The README's "Mirror into object storage" reading recipe, run against the S3 server:
pandas through fsspec/s3fs, and DuckDB through an fsspec filesystem registered with it
(DuckDB's own httpfs extension is downloaded at runtime, which a sandbox cannot do)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_cli
from tests.s3server import S3Server

for mod in ("obstore", "s3fs", "pandas"):
    if importlib.util.find_spec(mod) is None:
        pytest.skip(f"{mod} is not installed", allow_module_level=True)


def test_readme_recipe_pandas_and_duckdb(oh_server: Any, s3_server: S3Server, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    url = f"s3://{s3_server.bucket}/m"
    r = run_cli(oh_server, ["mirror", url, "--work-dir", str(tmp_path / "w")],
                env=s3_server.env())
    assert r.code == 0, r.stderr

    # -- the recipe (README, "Mirror into object storage") --
    import pandas as pd

    index = pd.read_json(f"{url}/index.jsonl", lines=True)
    row = index[index["basename"].str.endswith(".json")].iloc[0]
    with pd.io.common.get_handle(f"{url}/{row['path']}", "rb") as h:  # any fsspec URL
        data = json.load(h.handle)
    # --
    assert len(index) == len(run_cli(oh_server, ["list", "-f", "jsonl"]).stdout.splitlines())
    assert data is not None

    if importlib.util.find_spec("duckdb") is None:
        pytest.skip("duckdb is not installed")
    # -- the DuckDB recipe --
    import duckdb
    import s3fs

    con = duckdb.connect()
    con.register_filesystem(s3fs.S3FileSystem())
    n = con.execute(f"SELECT count(*) FROM read_json_auto('{url}/index.jsonl')").fetchone()
    # --
    assert n is not None and n[0] == len(index)
