"""Issue 20: start-up, and the interpreter's share of a small no-op, side by side.

    python -m benchmarks.run startup [--runs 9] [--files 600] [--baseline REF]

Every command runs in a fresh process (``benchlib.run_measured``: wall time and peak RSS),
in rounds, interleaved, and the median is shown with its ratio to the interpreter alone
(``python -c pass``, the peer every Python program pays) and, with ``--baseline REF``, to
the same command of ohpub at git ``REF`` (its ``ohpub/`` extracted under benchmarks/work).
Commands: ``-V``, ``--help``, ``completion bash``, ``status DEST``, the imports of the
mirror command (``import ohpub.cli.commands, ohpub.cli.meta, requests``), and a no-op
``mirror DEST`` of ``--files`` small files against the local server at ``--latency`` per request
(its listing alone, pages fetched by a plain client as in ``listing_alone.py``, is shown
beside it). Target: ``ohpub -V`` <= 0.15 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import benchlib as bl
import peers as pr

MB = 1000 * 1000


@dataclass
class Cmd:
    name: str
    args: list[str]  # after the interpreter
    walls: dict[str, list[float]] = field(default_factory=dict)  # tree -> runs
    rss: dict[str, int] = field(default_factory=dict)


def extract(ref: str, work: Path) -> Path:
    """``ohpub/`` of git ``ref`` in a directory of its own (for PYTHONPATH)."""
    out = work / f"baseline-{ref.replace('/', '_')}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(bl.ROOT), "archive", ref, "ohpub", "completions"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    bl.byte_compile(out)
    return out


def seed(server: bl.BenchServer, dest: Path, env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "ohpub", "--base-url", server.base_url, "--quiet", "mirror"]
    subprocess.run([*cmd, str(dest), "--project", str(bl.PROJECT)], env=env, check=True)


def commands(server: bl.BenchServer, dest: Path) -> list[Cmd]:
    ohpub = ["-m", "ohpub"]
    noop = [*ohpub, "--base-url", server.base_url, "--quiet", "mirror", str(dest)]
    return [
        Cmd("python -c pass (the interpreter)", ["-c", "pass"]),
        Cmd("ohpub -V", [*ohpub, "-V"]),
        Cmd("ohpub --help", [*ohpub, "--help"]),
        Cmd("ohpub completion bash", [*ohpub, "completion", "bash"]),
        Cmd("ohpub status DEST", [*ohpub, "status", str(dest)]),
        Cmd("imports of mirror", ["-c", "import ohpub.cli.commands, ohpub.cli.meta, requests"]),
        Cmd("ohpub mirror DEST (no-op)", [*noop, "--project", str(bl.PROJECT)]),
    ]


def run(args: argparse.Namespace) -> int:
    pr.WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="startup-", dir=pr.WORK))
    env = pr.env_for_children()
    trees = {"this": str(bl.ROOT)}
    if args.baseline:
        trees[args.baseline] = str(extract(args.baseline, work))
    server = bl.BenchServer(0.0, None)
    try:
        server.generate(args.files, max(1, args.files // 12), 4 * 1024, 64 * 1024)
        dests = {}
        for name, path in trees.items():
            dests[name] = work / f"dest-{len(dests)}"
            seed(server, dests[name], {**env, "PYTHONPATH": path})
        server.set_latency(args.latency)
        listing = _listing_alone(server, env, work, args.files)
        table = {name: commands(server, dests[name]) for name in trees}
        for i in range(args.runs):
            for k in range(len(table["this"])):
                for name, path in trees.items():
                    c = table[name][k]
                    if args.settle:
                        bl.wait_quiet(args.settle)
                    proc = bl.run_measured(
                        [sys.executable, *c.args], env={**env, "PYTHONPATH": path}, cwd=work
                    )
                    if proc.rc != 0:
                        problem = f"benchmark problem: {c.name} ({name}) exit {proc.rc}"
                        print(problem, file=sys.stderr)
                    c.walls.setdefault(name, []).append(proc.wall)
                    c.rss[name] = max(c.rss.get(name, 0), proc.peak_rss)
            if not args.quiet:
                print(f"  round {i + 1} of {args.runs} done", file=sys.stderr, flush=True)
        print(render(table, trees, args, listing))
        return 0
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _listing_alone(server: bl.BenchServer, env: dict[str, str], work: Path, n: int) -> float:
    """Seconds for a plain client to fetch the project's listing pages (median of 3)."""
    pages = max(1, -(-n // pr.OHPUB_PAGE))
    base = f"{server.base_url}/api/public/project/{bl.PROJECT}/datafiles/"
    urls = work / "pages.txt"
    page = pr.OHPUB_PAGE
    urls.write_text("".join(f"{base}?limit={page}&offset={i * page}\n" for i in range(pages)))
    script = Path(__file__).with_name("listing_alone.py")
    cmd = [sys.executable, str(script), "--concurrency", "4", str(urls)]
    return bl.median([bl.run_measured(cmd, env=env, cwd=work).wall for _ in range(3)])


def render(
    table: dict[str, list[Cmd]], trees: dict[str, str], args: argparse.Namespace, listing: float
) -> str:
    base = args.baseline
    head = "| command | median s | runs s | x interpreter | peak RSS MB |"
    rule = "|---|---|---|---|---|"
    if base:
        head += f" {base} median s | this / {base} |"
        rule += "---|---|"
    out = [head, rule]
    py = bl.median(table["this"][0].walls["this"])
    for k, c in enumerate(table["this"]):
        mine = bl.median(c.walls["this"])
        runs = ", ".join(f"{w:.2f}" for w in c.walls["this"])
        line = f"| {c.name} | {mine:.3f} | {runs} | {mine / py:.1f} | {c.rss['this'] / MB:.0f} |"
        if base:
            theirs = bl.median(table[base][k].walls[base])
            line += f" {theirs:.3f} | {mine / theirs:.2f} |"
        out.append(line)
    version = bl.median(table["this"][1].walls["this"])
    noop = bl.median(table["this"][-1].walls["this"])
    imports = bl.median(table["this"][5].walls["this"])
    out += [
        "",
        f"- listing alone (a plain client fetching the {args.files} files' pages at "
        f"{args.latency * 1000:.0f} ms): {listing:.2f} s; the no-op is {noop / listing:.2f}x it",
        f"- the interpreter's share of the no-op: {py:.3f} s of {noop:.2f} s = "
        f"{100 * py / noop:.0f}%; the mirror command's imports (interpreter included): "
        f"{imports:.3f} s = {100 * imports / noop:.0f}%",
        f"- target ohpub -V <= 0.15 s: **{'MET' if version <= 0.15 else 'MISSED'}** "
        f"({version:.3f} s = {version / py:.1f}x the interpreter alone)",
    ]
    return "\n".join(out) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run startup",
        description="Start-up of each command and the interpreter's share of a small no-op.",
    )
    p.add_argument("--runs", type=int, default=9, help="rounds (default 9; quick 2)")
    p.add_argument("--files", type=int, default=600, help="files of the no-op mirror")
    p.add_argument("--latency", type=float, default=0.030, help="seconds per request (no-op)")
    p.add_argument("--baseline", help="also measure ohpub at this git ref (e.g. main)")
    p.add_argument("--settle", type=float, default=0.0, help="wait for quiet before each run")
    p.add_argument("--quick", action="store_true", help="2 rounds, 60 files (smoke test)")
    p.add_argument("--quiet", "-q", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.files = 2, 60
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("# ohpub start-up benchmark\n")
    print(f"- date: {bl.utc_now()}")
    print(f"- machine: {bl.machine()}")
    print(f"- ohpub source: {bl.source_state()}")
    print(f"- uptime at start: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"- rounds {args.runs} (median, interleaved)\n")
    rc = run(args)
    print(f"uptime at the end: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return rc
