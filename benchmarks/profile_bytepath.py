"""Issue 20: where the time of one big download goes, per thread, before and after.

    python -m benchmarks.run profile [--size 400MiB] [--protos http,https] [--baseline REF]

Runs ``ohpub fetch ID -d DIR`` (the defaults: ranges on their own decision) against the
local server under ``py-spy record --idle --nonblocking`` (py-spy from benchmarks/setup.sh;
every thread, running or waiting, sampled without pausing the process), once with this
tree and, with ``--baseline``, once with ohpub at git ``REF``, and sums the samples of each
thread by the innermost line of ohpub it was on, by what that line calls: reading the
socket (waiting for bytes and TLS included), copies, sha256, md5, the writes, reading back
(the in-order hash of parallel ranges), fsync and writeback, queues and locks (a helper
waiting for work, a reader waiting for a free buffer), and the rest of the interpreter;
imports apart. A sample is 1/``RATE`` s of one thread's wall time.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import benchlib as bl
import peers as pr
from startup import extract
from transfer import parse_size

PYSPY = pr.WORK / "tools-venv" / "bin" / "py-spy"
RATE = 250
CATEGORIES = [
    ("md5", r"md5_block|MD5_Update|md5_update|_md5"),
    ("sha256", r"sha256_block|SHA256_Update|sha256_update|_sha256"),
    ("TLS (decrypt, records)", r"gcm|aesni|AES_|chacha|poly1305|ssl3_read|SSL_read|tls1_|ossl_ssl"),
    ("socket reads (TLS included)", r"\brecv\b|__libc_recv|sock_recv|recvfrom|recv_into"),
    ("writes (pwrite)", r"pwrite"),
    ("read-back (pread)", r"preadv|pread"),
    ("fsync, writeback", r"fsync|sync_file_range|fdatasync"),
    ("copies", r"memmove|memcpy"),
    ("allocation", r"malloc|_int_free|\bfree\b|realloc|mmap|munmap|\bbrk\b"),
    ("GIL, locks, queues", r"take_gil|pthread_cond|sem_wait|futex|acquire_timed|PyThread_acquire"),
    ("select, poll", r"\bselect\b|\bpoll\b"),
]
COMPILED = [(name, re.compile(rx)) for name, rx in CATEGORIES]


LINES = [
    ("socket reads (TLS included)", r"\.read1\(|raw\.read\(|readinto1|read_into\(|\.readinto\("),
    ("copies", r"view\[.*\] = data|\] = data"),
    ("sha256", r"sha256\.update"),
    ("md5", r"md5\.update"),
    ("hash (helper)", r"getattr\(self, name\)\.update"),
    ("writes (pwrite)", r"pwrite"),
    ("read-back (pread)", r"_pread_into|preadv|pread\("),
    ("fsync, writeback", r"fsync|_START_WRITEBACK|start\(self\.fd|sync_file_range"),
    ("select, poll", r"select\.select|_ready\("),
    ("GIL, locks, queues", r"\.get\(|\.put\(|\.wait|acquire|with self\._idle|notify"),
]
COMPILED_LINES = [(name, re.compile(rx)) for name, rx in LINES]
TRANSFER = re.compile(r"Downloader\.to_part|Sequential\.|Ranged\.|run_ranged")


def classify(raw: Path, tree: Path) -> dict[str, collections.Counter[str]]:
    """Thread -> category -> samples, from py-spy's ``--format raw`` output: the innermost
    native frame py-spy could name (libcrypto's hash and cipher symbols, libc's calls),
    else the innermost ohpub line (read from ``tree``) by what it calls."""
    threads: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    source: dict[str, list[str]] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        name = re.sub(r"-\d+$", "-*", frames[0].partition("): ")[2] or frames[0])
        if any("_find_and_load" in f for f in frames[:12]):
            threads[name]["imports"] += int(count)
        elif name == "MainThread" and not any(TRANSFER.search(f) for f in frames):
            threads[name]["start-up, listing, bookkeeping"] += int(count)
        else:
            threads[name][_category(frames[1:], tree, source)] += int(count)
    return threads


def _category(frames: list[str], tree: Path, source: dict[str, list[str]]) -> str:
    for frame in reversed(frames):
        hit = next((c for c, rx in COMPILED if rx.search(frame.split(" (")[0])), None)
        if hit:
            return hit
        m = re.search(r"\((ohpub/[^:]+):(\d+)\)", frame)
        if m is None:
            continue
        lines = source.get(m.group(1))
        if lines is None:
            path = tree / m.group(1)
            lines = path.read_text().splitlines() if path.exists() else []
            source[m.group(1)] = lines
        text = lines[int(m.group(2)) - 1] if int(m.group(2)) <= len(lines) else ""
        hit = next((c for c, rx in COMPILED_LINES if rx.search(text)), None)
        return hit or "interpreter, other"
    return "interpreter, other"


def profile(tree: str, server: bl.BenchServer, fid: int, work: Path, label: str) -> Path:
    dest = bl.fresh_dir(work / "dest")
    raw = work / f"{label}.txt"
    cmd = [str(PYSPY), "record", "--idle", "--nonblocking", "--threads", "-r", str(RATE)]
    cmd += ["-f", "raw"]
    cmd += ["-o", str(raw), "--", sys.executable, "-m", "ohpub", "--base-url", server.base_url]
    cmd += ["--quiet", "fetch", str(fid), "-d", str(dest)]
    env = server.client_env({**pr.env_for_children(), "PYTHONPATH": tree})
    subprocess.run(cmd, env=env, cwd=work, check=True, capture_output=True)
    return raw


def render(label: str, threads: dict[str, collections.Counter[str]]) -> str:
    total = sum(sum(c.values()) for c in threads.values()) or 1
    out = [f"**{label}** ({total / RATE:.1f} thread-seconds)", ""]
    out.append("| thread | thread-s | where its time went |")
    out.append("|---|---|---|")
    for name, c in sorted(threads.items(), key=lambda kv: -sum(kv[1].values())):
        n = sum(c.values())
        big = [(cat, k) for cat, k in c.most_common() if k / n >= 0.02]
        parts = ", ".join(f"{cat} {100 * k / n:.0f}%" for cat, k in big)
        out.append(f"| {name} | {n / RATE:.2f} | {parts} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run profile", description=__doc__)
    p.add_argument("--size", type=parse_size, default=400 << 20)
    p.add_argument("--protos", default="http,https")
    p.add_argument("--baseline", help="also profile ohpub at this git ref")
    args = p.parse_args(argv)
    if not PYSPY.exists():
        print(f"py-spy not found at {PYSPY}: run benchmarks/setup.sh", file=sys.stderr)
        return 1
    pr.WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="profile-", dir=pr.WORK))
    trees = {"this tree": str(bl.ROOT)}
    if args.baseline:
        trees[args.baseline] = str(extract(args.baseline, work))
    print(f"# Byte path profile ({args.size >> 20} MiB, ohpub fetch at the defaults)\n")
    print(f"- date: {bl.utc_now()}; machine: {bl.machine()}")
    print(f"- ohpub source: {bl.source_state()}")
    print(f"- load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    for proto in [x.strip() for x in args.protos.split(",") if x.strip()]:
        server = bl.BenchServer(0.0, None, tls=proto == "https")
        try:
            fid = server.generate(1, 1, args.size, args.size)[0]
            for label, tree in trees.items():
                raw = profile(tree, server, fid, work, f"{proto}-{len(label)}")
                print(render(f"{proto}, {label}", classify(raw, Path(tree))))
        finally:
            server.stop()
    return 0
