"""Measurement plumbing for ``benchmarks/run.py``: the local server, child processes, floors.

Nothing here knows about a particular peer; ``peers.py`` says how each tool is run and
``run.py`` puts scenarios together.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.ohserver import OHServer  # noqa: E402

PROJECT = 300
SITE_ROLES = ("api", "download")
"""Requests to Open Humans itself (listing, detail, download view); "storage" is S3."""

def byte_compile(tree: Path | None = None) -> None:
    """Compile ``tree``'s ``ohpub/`` (default: this checkout's) to ``__pycache__``, as pip
    does when it installs a wheel: ohpub is measured as users run it. Without this, a shell
    with ``PYTHONDONTWRITEBYTECODE=1`` (as here) makes every run of a source checkout
    compile its ~90 modules again (0.2-0.3 s per invocation on this machine), a cost no
    installed ohpub pays. Compiling ignores that variable; reading the files does too."""
    pkg = (tree or ROOT) / "ohpub"
    if pkg.is_dir():
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "-j", "0", str(pkg)],
            check=False,
            stdout=subprocess.DEVNULL,
        )


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


@dataclass
class LogStats:
    """What the server saw during one measured run."""

    requests: dict[str, int]
    bytes_sent: dict[str, int]
    peak_site: int  # api + download requests in flight at once (from the log intervals)
    peak_roles: dict[str, int]  # the server's own per-role peak_in_flight
    listing_requests: int
    listing_seconds: float  # sum of the listing requests' durations
    first_storage_start: float | None
    last_listing_end: float | None
    storage_statuses: dict[int, int]
    first_start: float | None = None  # epoch seconds of the first request
    last_end: float | None = None  # ... and the end of the last one
    site_busy: float = 0.0  # sum of the site requests' durations (s)
    storage_busy: float = 0.0  # sum of the storage requests' durations (s)

    @property
    def site_requests(self) -> int:
        return sum(self.requests.get(r, 0) for r in SITE_ROLES)

    @property
    def storage_requests(self) -> int:
        return self.requests.get("storage", 0)

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_sent.values())

    def merged(self, other: LogStats) -> LogStats:
        """Two runs (killed + resumed) as one."""

        def add(a: dict, b: dict) -> dict:
            return {k: a.get(k, 0) + b.get(k, 0) for k in set(a) | set(b)}

        return LogStats(
            requests=add(self.requests, other.requests),
            bytes_sent=add(self.bytes_sent, other.bytes_sent),
            peak_site=max(self.peak_site, other.peak_site),
            peak_roles={
                k: max(self.peak_roles.get(k, 0), other.peak_roles.get(k, 0))
                for k in set(self.peak_roles) | set(other.peak_roles)
            },
            listing_requests=self.listing_requests + other.listing_requests,
            listing_seconds=self.listing_seconds + other.listing_seconds,
            first_storage_start=self.first_storage_start,
            last_listing_end=self.last_listing_end,
            storage_statuses=add(self.storage_statuses, other.storage_statuses),
            first_start=self.first_start,
            last_end=other.last_end,
            site_busy=self.site_busy + other.site_busy,
            storage_busy=self.storage_busy + other.storage_busy,
        )


def _is_listing(path: str) -> bool:
    return path.endswith("/datafiles/") or path.endswith("/public-data/")


class BenchServer:
    """``tests.ohserver.OHServer`` in benchmark mode: latency on every role, an optional
    per-connection bandwidth cap on storage, generated data in project 300; ``tls``: both
    roles over HTTPS, clients trust ``ca_bundle``."""

    def __init__(self, latency: float, bandwidth: int | None = None, tls: bool = False) -> None:
        self.oh = OHServer(seed=0, tls=tls)
        self.oh.start()
        self.set_latency(latency)
        self.oh.faults.bandwidth = bandwidth
        self.ids: list[int] = []

    @property
    def base_url(self) -> str:
        return self.oh.base_url

    @property
    def ca_bundle(self) -> str | None:
        return self.oh.ca_bundle if self.oh.tls else None

    def client_env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` for a child that must trust this server (REQUESTS_CA_BUNDLE over TLS)."""
        out = dict(env)
        if self.ca_bundle:
            out["REQUESTS_CA_BUNDLE"] = self.ca_bundle
        return out

    def set_latency(self, seconds: float) -> None:
        self.latency = seconds
        self.oh.faults.latency.clear()
        if seconds > 0:
            self.oh.faults.latency.update(dict.fromkeys(("api", "download", "storage"), seconds))

    def generate(self, files: int, members: int, min_size: int, max_size: int) -> list[int]:
        self.ids = self.oh.generate(files, members, min_size, max_size, project_id=PROJECT)
        self.oh.precompute_etags()  # the first GET of a 1 GB file must not pay for its MD5
        return self.ids

    def sizes(self) -> list[int]:
        return [self.oh.file(i).size for i in self.ids]

    def quiesce(self, timeout: float = 10.0) -> None:
        """Wait until no request is in flight (a killed client's last response ends)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.oh._lock:
                busy = sum(self.oh.in_flight.values())
            if not busy:
                return
            time.sleep(0.01)

    def reset(self) -> None:
        self.quiesce()
        self.oh.clear_log()
        self.oh.max_in_flight_reset()

    def stats(self) -> LogStats:
        self.quiesce()
        with self.oh._lock:
            log = list(self.oh.log)
            peaks = dict(self.oh.peak_in_flight)
        requests: dict[str, int] = {}
        sent: dict[str, int] = {}
        statuses: dict[int, int] = {}
        events: list[tuple[float, int]] = []
        listing_n, listing_s = 0, 0.0
        busy = {"site": 0.0, "storage": 0.0}
        first_storage: float | None = None
        last_listing: float | None = None
        for e in log:
            requests[e.role] = requests.get(e.role, 0) + 1
            sent[e.role] = sent.get(e.role, 0) + e.bytes_sent
            busy["storage" if e.role == "storage" else "site"] += e.end - e.start
            if e.role in SITE_ROLES:
                events.append((e.start, 1))
                events.append((e.end, -1))
            if e.role == "api" and _is_listing(e.path):
                listing_n += 1
                listing_s += e.end - e.start
                last_listing = e.end if last_listing is None else max(last_listing, e.end)
            if e.role == "storage":
                statuses[e.status] = statuses.get(e.status, 0) + 1
                if first_storage is None or e.start < first_storage:
                    first_storage = e.start
        events.sort(key=lambda x: (x[0], x[1]))  # an end before a start at the same instant
        cur = peak = 0
        for _, d in events:
            cur += d
            peak = max(peak, cur)
        return LogStats(
            requests=requests,
            bytes_sent=sent,
            peak_site=peak,
            peak_roles=peaks,
            listing_requests=listing_n,
            listing_seconds=listing_s,
            first_storage_start=first_storage,
            last_listing_end=last_listing,
            storage_statuses=statuses,
            first_start=min((e.start for e in log), default=None),
            last_end=max((e.end for e in log), default=None),
            site_busy=busy["site"],
            storage_busy=busy["storage"],
        )

    def listing(self) -> list[dict]:
        """Every file of the project in one page (one request: no paging gaps), fresh keys.
        This is how the URL-list peers (wget, curl, aria2c) get their list; not timed."""
        url = f"{self.base_url}/api/public/project/{PROJECT}/datafiles/?limit=1000000"
        req = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            page = json.load(resp)
        return [item for item in page["results"] if item]

    def storage_url(self, file_id: int) -> str:
        return self.oh.signed_url(file_id)

    def stop(self) -> None:
        self.oh.stop()


# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------


@dataclass
class ProcResult:
    wall: float
    rc: int | None
    peak_rss: int  # bytes
    cpu: float  # user + sys seconds of the process tree (reaped children included)
    procs: int  # most processes seen at once in the tree
    timed_out: bool = False
    killed: bool = False
    stderr: str = ""
    started: float = 0.0  # epoch seconds (to line up with the server log)
    ended: float = 0.0
    other_cpu: float = 0.0  # CPU seconds used by processes other than the runner and the tool


def _busy_jiffies() -> int:
    """Busy CPU time of the whole machine, in clock ticks (/proc/stat)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
    return sum(fields) - idle - guest


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _ppid_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    return children


def other_load(window: float = 1.0) -> float:
    """Cores used by processes other than this one over ``window`` seconds."""
    busy0, own0 = _busy_jiffies(), _own_cpu()
    time.sleep(window)
    busy = (_busy_jiffies() - busy0) / os.sysconf("SC_CLK_TCK")
    return max(0.0, busy - (_own_cpu() - own0)) / window


def wait_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (at most ``max_wait`` s) until other processes use less than ``threshold``
    cores; other engineers' test runs share this machine. Returns the last load seen."""
    deadline = time.monotonic() + max_wait
    load = 0.0
    while time.monotonic() < deadline:
        load = other_load(min(1.0, max(0.2, deadline - time.monotonic())))
        if load < threshold:
            return load
    return load


def _tree(pid: int) -> list[int]:
    children = _ppid_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


TIME = "/usr/bin/time"  # GNU time: the child's own ru_maxrss, from a small parent


def run_measured(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    kill_when: Callable[[], bool] | None = None,
    kill_signal: int = signal.SIGKILL,
    poll: float = 0.01,
) -> ProcResult:
    """Run ``cmd`` in its own process group and measure wall time, peak RSS and CPU.

    Peak RSS is the larger of ``/usr/bin/time``'s maximum RSS of the command (the kernel's
    ru_maxrss of its largest process; run through GNU time because a child forked from this
    big runner would inherit the runner's RSS high-water mark until its exec) and the sum of
    RSS over the command's whole process tree, sampled every ``poll`` s (this is what counts
    for multi-process tools such as ohpub-download). ``kill_when`` is polled as well; when it
    turns true, ``kill_signal`` goes to the process group (scenario 5).
    """
    stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    time_out = tempfile.NamedTemporaryFile(prefix="bench-time-", delete=False)  # noqa: SIM115
    time_out.close()
    wrapped = os.path.exists(TIME)
    full = [TIME, "-q", "-f", "%M", "-o", time_out.name, *cmd] if wrapped else list(cmd)
    busy0, own0 = _busy_jiffies(), _own_cpu()
    t0 = time.monotonic()
    started = time.time()
    proc = subprocess.Popen(
        full,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr_file,
        start_new_session=True,
    )
    done = threading.Event()
    state = {"peak": 0, "procs": 1, "killed": False, "timed_out": False}

    def watch() -> None:
        pids = [proc.pid]
        last_tree = 0.0
        while not done.is_set():
            now = time.monotonic()
            if now - last_tree > 0.1:
                pids = _tree(proc.pid)
                if wrapped:
                    pids = [p for p in pids if p != proc.pid]
                last_tree = now
                state["procs"] = max(state["procs"], len(pids))
            state["peak"] = max(state["peak"], sum(_rss(p) for p in pids))
            if kill_when is not None and not state["killed"] and kill_when():
                state["killed"] = True
                _signal_group(proc, kill_signal, done)
            if timeout is not None and now - t0 > timeout and not state["timed_out"]:
                state["timed_out"] = True
                _signal_group(proc, signal.SIGKILL, done)
            done.wait(poll)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    ended = time.time()
    done.set()
    watcher.join()
    hz = os.sysconf("SC_CLK_TCK")
    machine = (_busy_jiffies() - busy0) / hz
    mine = (_own_cpu() - own0) + ru.ru_utime + ru.ru_stime
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc
    stderr_file.seek(0)
    err = stderr_file.read().decode("utf-8", "replace")
    stderr_file.close()
    maxrss = 0
    try:
        text = Path(time_out.name).read_text().split()
        maxrss = int(text[-1]) * 1024 if text and text[-1].isdigit() else 0
    finally:
        os.unlink(time_out.name)
    if not wrapped:
        maxrss = ru.ru_maxrss * 1024
    return ProcResult(
        wall=wall,
        rc=rc,
        peak_rss=max(maxrss, int(state["peak"])),
        cpu=ru.ru_utime + ru.ru_stime,
        procs=int(state["procs"]),
        timed_out=bool(state["timed_out"]),
        killed=bool(state["killed"]),
        stderr=err[-4000:],
        started=started,
        ended=ended,
        other_cpu=max(0.0, machine - mine),
    )


def _signal_group(proc: subprocess.Popen, sig: int, done: threading.Event) -> None:
    """Signal the child's process group, only while the child is not yet reaped."""
    if done.is_set():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def tree_bytes(root: Path) -> int:
    """Bytes of every regular file under ``root`` (partial files included)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def data_files(root: Path) -> tuple[int, int]:
    """(count, bytes) of the data files a tool left: its own bookkeeping excluded."""
    n = size = 0
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".ohpub"]
        for name in files:
            if name == "index.jsonl" or name.endswith(".aria2"):
                continue
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            n += 1
            size += st.st_size
    return n, size


def machine() -> str:
    """nproc, CPU model (/proc/cpuinfo), memory (/proc/meminfo), Python, kernel."""
    import platform

    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kib = int(fh.readline().split()[1])
            mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(ln.split(":")[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"nproc {os.cpu_count()}, CPU {cpu}, {mem} RAM, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def source_state() -> str:
    """Which ohpub is measured: the commit, and whether ohpub/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--short", "ohpub"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split("\n")
    except OSError:
        return "unknown (no git)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"commit {head or '?'}" + (f" + uncommitted {', '.join(changed)}" if changed else "")


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    if not s:
        return math.nan
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


# ---------------------------------------------------------------------------------------------
# Floors: the time latency and caps alone impose for a given parallelism
# ---------------------------------------------------------------------------------------------


def makespan(durations: Sequence[float], slots: int) -> float:
    """Longest-first list scheduling of whole tasks on ``slots`` parallel slots (a file is one
    connection: it cannot be split). Optimal for equal tasks; within 4/3 otherwise."""
    if not durations:
        return 0.0
    heap = [0.0] * max(1, min(slots, len(durations)))
    for d in sorted(durations, reverse=True):
        heapq.heappush(heap, heapq.heappop(heap) + d)
    return max(heap)


@dataclass
class FloorModel:
    """How a tool spends requests. ``coupled``: one worker does the download view and then the
    storage transfer of a file (curl, wget, aria2c, ohpub-download); otherwise the two are
    separate resources with separate limits (ohpub: site ``site``, storage ``storage``)."""

    site: int
    storage: int
    coupled: bool
    list_pages: int = 0  # listing requests the tool makes itself
    list_first: bool = False  # the whole listing comes before the first download
    extra: dict[str, float] = field(default_factory=dict)

    def floor(self, latency: float, sizes: Sequence[int], rate: float | None) -> float:
        """Seconds the latency ``L`` and per-connection rate ``B`` alone impose.

        decoupled (ohpub): all site requests (P listing pages + N download views) go through
        ``A`` slots, all storage transfers (L + s/B each) through ``J`` slots:
            floor = max( ceil((P+N)/A)·L + L + min(s)/B ,  2L + LPT(L + s_i/B; J) )
        coupled (one worker does view then transfer; W workers):
            floor = [P·L if it lists first] + LPT(2L + s_i/B; W)
        LPT is the makespan of whole files on the slots (longest first).
        """
        L = latency
        d = [s / rate if rate else 0.0 for s in sizes]
        if not d:
            return self.list_pages * L
        if self.coupled:
            head = self.list_pages * L if self.list_first else 0.0
            return head + makespan([2 * L + x for x in d], self.site)
        site = math.ceil((self.list_pages + len(d)) / self.site) * L + L + min(d)
        storage = 2 * L + makespan([L + x for x in d], self.storage)
        return max(site, storage)
