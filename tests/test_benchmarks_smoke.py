"""Smoke test of the benchmark: ``benchmarks/run.py --quick`` runs every scenario and peer.

It checks that everything runs and reports, not timings. Peers that are not installed on
this machine (benchmarks/setup.sh not run) must show as "not available", not fail.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ("ohpub", "ohpub-download", "wget", "curl", "aria2c")


def test_quick_benchmark_runs_every_scenario_and_peer(tmp_path: Path) -> None:
    out_json = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--quiet",
            "--json",
            str(out_json),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for num in range(1, 6):
        assert f"### Scenario {num}:" in out, out
    sections = re.split(r"^### Scenario \d+:", out, flags=re.M)[1:]
    assert len(sections) == 5
    for section in sections:
        for peer in PEERS:
            assert re.search(rf"^\| {re.escape(peer)} \|", section, re.M), (peer, section)
    results = json.loads(out_json.read_text())
    assert [r["scenario"] for r in results] == [1, 2, 3, 4, 5]
    for r in results:
        rows = {row["peer"]: row for row in r["rows"]}
        assert set(PEERS) <= set(rows)
        assert "unavailable" not in rows["ohpub"]
        assert rows["ohpub"]["rc"] and all(rc == 0 for rc in rows["ohpub"]["rc"]), rows["ohpub"]
        for peer in PEERS:
            row = rows[peer]
            # either it ran (a wall time) or it says why it could not
            assert "wall" in row or row.get("unavailable"), row
