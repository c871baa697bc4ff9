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
PEERS2 = {"ohpub fetch", "ohpub mirror", "aria2c", "curl"}  # run.py transfer, part (b)


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


def _run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_quick_transfer_benchmark_runs_both_protocols_and_checks_bytes(tmp_path: Path) -> None:
    out_json = tmp_path / "transfer.json"
    out = _run_bench(
        "transfer", "--quick", "--quiet", "--protos", "https", "--json", str(out_json)
    ).stdout
    assert "- machine: nproc " in out and "- date: " in out, out
    assert "## (a) One " in out and "## (b) One " in out, out
    results = json.loads(out_json.read_text())
    big = {"ohpub fetch", "ohpub mirror", "ohpub fetch, ranges off", "curl", "aria2c", "disk"}
    for part, peers in (("big", big), ("capped", PEERS2)):
        assert [r["proto"] for r in results[part]] == ["https"]  # http: the test above
        for res in results[part]:
            rows = {row["name"]: row for row in res["rows"]}
            assert set(rows) == peers
            for name in sorted(n for n in rows if n.startswith("ohpub")):
                runs = rows[name]["runs"]
                assert runs and all(r["ok"] and r["rc"] == 0 for r in runs), rows[name]
            for row in rows.values():
                assert row["runs"] or row["unavailable"], row


def test_quick_scale_benchmark_reports_a_row_per_size_and_the_slopes(tmp_path: Path) -> None:
    out_json = tmp_path / "scale.json"
    out = _run_bench(
        "scale",
        "--quick",
        "--quiet",
        "--sizes",
        "150,400",
        "--per-member",
        "300",
        "--json",
        str(out_json),
    ).stdout
    assert re.search(r"^\| 150 \(1\) \|", out, re.M), out
    assert re.search(r"^\| 400 \(2\) \|", out, re.M), out
    assert "slopes per 1,000 files" in out, out
    results = json.loads(out_json.read_text())
    assert [r["files"] for r in results] == [150, 400]
    for r in results:
        assert r["noop"]["storage"] == 0, r
        assert r["listing_alone"]["rc"] == 0 and r["replay"]["rc"] == 0, r


def test_quick_startup_benchmark_reports_every_command() -> None:
    out = _run_bench("startup", "--quick", "--quiet").stdout
    assert "- machine: nproc " in out and "- date: " in out, out
    for name in ("python -c pass", "ohpub -V", "ohpub status DEST", "ohpub mirror DEST (no-op)"):
        assert re.search(rf"^\| {re.escape(name)}", out, re.M), (name, out)
    assert "the interpreter's share of the no-op" in out and "target ohpub -V" in out, out


def test_quick_capacity_benchmark_reports_seed_noop_and_the_plain_listing(tmp_path: Path) -> None:
    out_json = tmp_path / "capacity.json"
    out = _run_bench(
        "capacity", "--quick", "--quiet", "--orders", "stable", "--json", str(out_json)
    ).stdout
    assert "- machine: nproc " in out and "capacity: " in out, out
    rows = json.loads(out_json.read_text())["stable"]
    assert [r["what"].split(" (")[0] for r in rows] == [
        "ohpub seed",
        "ohpub no-op",
        "plain listing",
    ]
    seed, noop, plain = rows
    assert seed["rc"] == noop["rc"] == plain["rc"] == 0, rows
    assert seed["files"] == noop["files"] == plain["files"] > 0
    assert noop["repeated"] == 0 and noop["requests"] >= 1
