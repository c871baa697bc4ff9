"""The tools compared: ohpub and what users would use instead.

Each peer says whether it is installed (and why not), how it is run against the local
server, and how it spends requests (its ``FloorModel``). ``ohpub`` and ``ohpub-download``
list by themselves; wget, curl and aria2c cannot, so they get a URL list (the
``download_url`` of each file, taken from a listing just before the run and not timed).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from benchlib import PROJECT, ROOT, FloorModel

WORK = ROOT / "benchmarks" / "work"
PEER_PYTHON = WORK / "peer-venv" / "bin" / "python"
OHDL_WRAPPER = ROOT / "benchmarks" / "ohpub_download_local.py"
OHPUB_PAGE = 500  # the plain listing's page (0.3.0's; ohpub now sizes its own, remote.sizing)
LEGACY_PAGE = 100  # the server's default page, which ohpub-download uses


@dataclass
class Context:
    base_url: str
    dest: Path
    items: list[dict]  # the listing (for the URL-list peers)
    jobs: int
    api_concurrency: int
    work: Path  # scratch directory for URL lists


def safe_name(item: dict) -> str:
    base = str(item["basename"]).replace("/", "_").replace("\n", "_").lstrip(".") or "file"
    return f"{item['id']}_{base}"


class Peer:
    name = ""
    lists = False  # True when the tool lists by itself
    hashes = False  # True when the tool hashes what it downloads

    def unavailable(self) -> str | None:
        """None when the peer can run, else the reason it cannot."""
        return None

    def parallelism(self, jobs: int, api: int) -> str:
        raise NotImplementedError

    def model(self, jobs: int, api: int, n_files: int) -> FloorModel:
        raise NotImplementedError

    def command(self, ctx: Context) -> list[str]:
        raise NotImplementedError


def _ohpub_exe() -> list[str]:
    exe = Path(sys.executable).with_name("ohpub")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ohpub"]


class Ohpub(Peer):
    name = "ohpub"
    lists = True
    hashes = True

    def unavailable(self) -> str | None:
        try:
            import ohpub  # noqa: F401
        except ImportError:
            return f"ohpub is not importable by {sys.executable}"
        return None

    def parallelism(self, jobs: int, api: int) -> str:
        return f"site {api} / storage {jobs}"

    def model(self, jobs: int, api: int, n_files: int) -> FloorModel:
        return FloorModel(
            site=api,
            storage=jobs,
            coupled=False,
            list_pages=max(1, math.ceil(n_files / OHPUB_PAGE)),
        )

    def command(self, ctx: Context) -> list[str]:
        return [
            *_ohpub_exe(),
            "--base-url",
            ctx.base_url,
            "--quiet",
            "--api-concurrency",
            str(ctx.api_concurrency),
            "mirror",
            str(ctx.dest),
            "--project",
            str(PROJECT),
            "--jobs",
            str(ctx.jobs),
        ]


class OhpubDownload(Peer):
    name = "ohpub-download"
    lists = True

    def unavailable(self) -> str | None:
        if not PEER_PYTHON.exists():
            return "not installed: run benchmarks/setup.sh (pip install open-humans-api)"
        if not (PEER_PYTHON.parent.parent / "bin" / "ohpub-download").exists():
            return "open-humans-api is not installed in benchmarks/work/peer-venv"
        return None

    def parallelism(self, jobs: int, api: int) -> str:
        return "4 processes (fixed)"

    def model(self, jobs: int, api: int, n_files: int) -> FloorModel:
        return FloorModel(
            site=4,
            storage=4,
            coupled=True,
            list_pages=max(1, math.ceil(n_files / LEGACY_PAGE)),
            list_first=True,
        )

    def command(self, ctx: Context) -> list[str]:
        return [
            str(PEER_PYTHON),
            str(OHDL_WRAPPER),
            "--base-url",
            ctx.base_url,
            "--source",
            f"direct-sharing-{PROJECT}",
            "--directory",
            str(ctx.dest),
            "--max-size",
            "100g",  # the default 128m would skip the large files
            "--quiet",
        ]


class _UrlListPeer(Peer):
    tool = ""
    package = ""

    def unavailable(self) -> str | None:
        if shutil.which(self.tool) is None:
            return (
                f"{self.tool} not found: run benchmarks/setup.sh (apt-get install {self.package})"
            )
        return None


class Wget(_UrlListPeer):
    name = tool = package = "wget"

    def parallelism(self, jobs: int, api: int) -> str:
        return "1 (no knob)"

    def model(self, jobs: int, api: int, n_files: int) -> FloorModel:
        return FloorModel(site=1, storage=1, coupled=True)

    def command(self, ctx: Context) -> list[str]:
        if len(ctx.items) == 1:  # one file: name it, so -c can resume it
            item = ctx.items[0]
            return ["wget", "-q", "-c", "-O", str(ctx.dest / safe_name(item)), item["download_url"]]
        urls = ctx.work / "wget-urls.txt"
        urls.write_text("".join(item["download_url"] + "\n" for item in ctx.items))
        # --trust-server-names -x: name files after the storage path (unique per file);
        # wget keeps the signed query string in the name, so -c cannot match a file again.
        return [
            "wget",
            "-q",
            "-c",
            "-x",
            "-nH",
            "--trust-server-names",
            "-P",
            str(ctx.dest),
            "-i",
            str(urls),
        ]


class Curl(_UrlListPeer):
    name = tool = package = "curl"

    def parallelism(self, jobs: int, api: int) -> str:
        return f"--parallel-max {jobs}"

    def model(self, jobs: int, api: int, n_files: int) -> FloorModel:
        return FloorModel(site=jobs, storage=jobs, coupled=True)

    def command(self, ctx: Context) -> list[str]:
        cfg = ctx.work / "curl.cfg"
        lines = []
        for item in ctx.items:
            out = str(ctx.dest / safe_name(item)).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'url = "{item["download_url"]}"\noutput = "{out}"\n')
        cfg.write_text("".join(lines))
        # -C -: resume, and a complete file answers 416, which curl takes as "done"
        return [
            "curl",
            "-sS",
            "--no-progress-meter",
            "-L",
            "-C",
            "-",
            "--parallel",
            "--parallel-max",
            str(ctx.jobs),
            "-K",
            str(cfg),
        ]


class Aria2c(_UrlListPeer):
    name = tool = "aria2c"
    package = "aria2"

    def parallelism(self, jobs: int, api: int) -> str:
        return f"-j {jobs}"

    def model(self, jobs: int, api: int, n_files: int) -> FloorModel:
        return FloorModel(site=jobs, storage=jobs, coupled=True)

    def command(self, ctx: Context) -> list[str]:
        lst = ctx.work / "aria2-input.txt"
        lst.write_text(
            "".join(f"{item['download_url']}\n  out={safe_name(item)}\n" for item in ctx.items)
        )
        return [
            "aria2c",
            "-q",
            "-i",
            str(lst),
            "-j",
            str(ctx.jobs),
            "-c",
            "--file-allocation=none",
            "--auto-file-renaming=false",
            "--console-log-level=error",
            "--summary-interval=0",
            "-d",
            str(ctx.dest),
        ]


ALL_PEERS: list[Peer] = [Ohpub(), OhpubDownload(), Wget(), Curl(), Aria2c()]


def by_name(names: str | None) -> list[Peer]:
    if not names:
        return list(ALL_PEERS)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {p.name: p for p in ALL_PEERS}
    bad = [n for n in wanted if n not in known]
    if bad:
        raise SystemExit(f"unknown peer(s) {', '.join(bad)}; known: {', '.join(known)}")
    if "ohpub" not in wanted:
        wanted.insert(0, "ohpub")  # ratios are to ohpub
    chosen = [known[n] for n in wanted]
    return chosen


def env_for_children() -> dict[str, str]:
    env = dict(os.environ)
    for var in (
        "OHPUB_BASE_URL",
        "OHPUB_JOBS",
        "OHPUB_PAGE_SIZE",
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ):
        env.pop(var, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["NO_COLOR"] = "1"
    return env
