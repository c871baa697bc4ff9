"""Mirror the same dataset to a local tree and to the S3 test server: seed and no-op, as a
ratio, with the bucket's requests per file.

    PYTHONPATH=. python benchmarks/s3_mirror.py [--small N] [--big N --big-mib M]
                                               [--profile DIR]

Both runs use the CLI in-process against tests/ohserver.py (loopback), so the Open Humans
side costs the same; the S3 side is tests/s3server.py (moto in a child process). Figures
go to benchmarks/RESULTS.md by hand, with the machine and date.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import add_big_file, run_cli  # noqa: E402
from tests.ohserver import OHServer  # noqa: E402
from tests.s3server import S3Server  # noqa: E402


def timed(oh: OHServer, args: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    r = run_cli(oh, args, env=env)
    if r.code != 0:
        raise SystemExit(f"{args}: exit {r.code}: {r.stderr}")
    return time.perf_counter() - t


def case(name: str, oh: OHServer, s3: S3Server, tmp: Path, n: int, profile: Path | None,
         jobs: int) -> None:
    bucket = f"bench-{name}"
    s3.create_bucket(bucket)
    env = s3.env()
    local = ["mirror", str(tmp / f"tree-{name}"), "-p", "600", "--jobs", str(jobs)]
    remote = ["mirror", f"s3://{bucket}/m", "--work-dir", str(tmp / f"work-{name}"), "-p", "600",
              "--jobs", str(jobs)]
    seed_l = timed(oh, local, env)
    s3.reset_counts()
    if profile:
        prof = cProfile.Profile()
        prof.enable()
    seed_s = timed(oh, remote, env)
    if profile:
        prof.disable()
        out = profile / f"seed-{name}.prof"
        prof.dump_stats(out)  # the same as cProfile -o
        for key in ("cumulative", "tottime"):
            print(f"--- seed {name}, by {key} ({out})")
            pstats.Stats(str(out)).sort_stats(key).print_stats(15)
    seed_req = sum(s3.counts().values())
    noop_l = timed(oh, local, env)
    s3.reset_counts()
    noop_s = timed(oh, remote, env)
    noop_req = s3.counts()
    print(f"{name}: {n} files | seed tree {seed_l:.2f}s s3 {seed_s:.2f}s ratio "
          f"{seed_s / seed_l:.2f} ({seed_req / n:.2f} req/file) | no-op tree {noop_l:.2f}s "
          f"s3 {noop_s:.2f}s ratio {noop_s / noop_l:.2f} ({sum(noop_req.values())} requests: "
          f"{dict((k, v) for k, v in noop_req.items() if v)})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=500)
    ap.add_argument("--big", type=int, default=3)
    ap.add_argument("--big-mib", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR",
                    help="profile the seed into S3 (cProfile) and write DIR/seed-<case>.prof")
    a = ap.parse_args()
    with S3Server() as s3, tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        oh = OHServer().load_sample()
        oh.start()
        try:
            oh.add_project(600, "Bench")
            for i in range(a.small):
                oh.add_file(basename=f"f{i}.json", content=b"x" * 2048, project_id=600,
                            username="alice")
            case("small", oh, s3, tmp, a.small, a.profile, a.jobs)
            oh.stop()
            oh = OHServer().load_sample()
            oh.start()
            oh.add_project(600, "Bench")
            for i in range(a.big):
                add_big_file(oh, a.big_mib << 20, seed=i, basename=f"big{i}.bin")
            case("big", oh, s3, tmp, a.big, a.profile, a.jobs)
        finally:
            oh.stop()


if __name__ == "__main__":
    main()
