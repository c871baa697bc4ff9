"""Smoke test of benchmarks/s3_libs.py: ``--quick`` runs every phase for each installed
library and reports them; it checks that everything runs, not timings."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.s3server import moto_available

ROOT = Path(__file__).resolve().parent.parent
LIBS = [lib for lib in ("obstore", "s3fs") if importlib.util.find_spec(lib) is not None]

pytestmark = [
    pytest.mark.skipif(not moto_available(), reason="moto's server mode is not installed"),
    pytest.mark.skipif(not LIBS, reason="neither obstore nor s3fs is installed"),
]


def test_quick_s3_libs_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "s3.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "s3_libs.py"), "--quick",
                           "--libs", ",".join(LIBS), "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for lib in LIBS:
        phases = report["summary"][lib]
        for name in ("small_put", "small_head", "small_get", "big_put", "big_get"):
            assert phases[name]["seconds"] > 0, (lib, name)
            assert f"| {name} | {lib} |" in proc.stdout
        assert phases["small_put"]["requests"] == {"PutObject": 20}
        assert phases["big_put"]["requests"]["UploadPart"] >= 2  # multipart
        assert report["imports"][lib]["modules_imported"] > 0
