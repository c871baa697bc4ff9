"""Measurement-only prototypes of the engine changes recommended in RESULTS.md.

Runs the ``ohpub`` command line with some of ohpub's functions monkeypatched, so that the
gain of a recommended change can be measured before the lead engineer applies it in
``ohpub/``. Nothing here is used by ``ohpub`` itself, and ``run.py`` uses it only with
``--proto P1,P2,...`` (an extra row "ohpub+P1,P2" in each table). Patches:

P1  mirror: collect results with a completion queue instead of calling
    ``concurrent.futures.wait(all_pending, FIRST_COMPLETED)`` once per finished file
    (that call is O(pending) in Python, so the loop is O(N^2) and holds the GIL).
P2  mirror/download: decouple the two limits. ``jobs + api_concurrency`` worker threads;
    a storage semaphore of ``jobs`` around each storage transfer; the download view keeps
    its own API limit. Workers waiting for the API no longer idle a storage slot and
    vice versa.
P4  cli: ``sys.setswitchinterval(0.0005)``: a thread woken by its socket waits less for the
    GIL (the 5 ms default adds up to 5 ms to a request whenever another thread computes).
P3  api: look proxies up once per session (``trust_env`` scans the environment on every
    request in requests' ``merge_environment_settings``).

P5  mirror: group commit. Results that finished together are placed as a batch: renames
    first, then one fsync per touched directory and one state transaction (``put_many``,
    one fsync) for the batch, instead of a directory fsync and a FULL-synchronous commit
    per file on the main thread. Needs P1 (it drains the completion queue).
P6  download: no resume sidecar for objects of at most 1 MiB (write + rename + unlink of a
    JSON file per small file; resuming a 1 MiB object saves nothing).

P7  api: re-crawl an incomplete listing as one snapshot page up to 20,000 files (today 5,000;
    above that the re-crawls use 1000- and 2000-file pages whose boundaries all fall on
    boundaries of the first crawl, so the same members are cut again).

Written against commit e104c84. be63fbb applied P1, P2 and P6 in ohpub itself; P1 and P5
here still replace ``Mirror._collect`` wholesale (dropping whatever the engine's own version
does besides collecting), so they are for measuring only, never for real mirrors.

Usage: python benchmarks/proto_patches.py P1,P2 -- [ohpub arguments]
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from typing import Any


def patch_p1(grouped: bool = False) -> None:
    from concurrent.futures import Future

    from ohpub import mirror

    orig_schedule = mirror.Mirror._schedule

    def _schedule(self: Any, pool: Any, f: Any, ts: Any) -> Any:
        fut = orig_schedule(self, pool, f, ts)
        if fut is not None:
            if not hasattr(self, "_done_q"):
                self._done_q = queue.SimpleQueue()
            fut.add_done_callback(self._done_q.put)
        return fut

    def _collect(
        self: Any, state: Any, pending: dict[Future[Any], Any], targets: Any, tracked: Any
    ) -> None:
        busy = {f.id for f in pending.values()}
        for fid, fs in tracked.items():
            if (
                fid in targets
                and fid not in busy
                and fid not in self._renamed
                and fs.status == "present"
            ):
                self._report(mirror.FileResult(fid, fs.path, "unchanged", fs.size, fs.sha256))
        done_q = getattr(self, "_done_q", None)
        left = len(pending)
        while left:
            try:
                batch = [done_q.get(timeout=0.5)]
            except queue.Empty:
                continue
            if grouped:
                while len(batch) < 256:
                    try:
                        batch.append(done_q.get_nowait())
                    except queue.Empty:
                        break
                _BATCH["on"] = True
            try:
                for fut in batch:
                    left -= 1
                    f = pending[fut]
                    try:
                        out = fut.result()
                    except mirror.Cancelled:
                        continue
                    self._apply(state, f, out, targets[f.id], tracked[f.id])
            finally:
                if grouped:
                    _BATCH["on"] = False
                    flush_batch(state)

    mirror.Mirror._schedule = _schedule
    mirror.Mirror._collect = _collect


_BATCH: dict[str, Any] = {"on": False, "puts": [], "dirs": set()}


def patch_p5() -> None:
    from ohpub import download, mirror, state

    orig_put = state.StateDB.put

    def put(self: Any, fs: Any) -> None:
        if _BATCH["on"]:
            _BATCH["puts"].append(fs)
            return
        orig_put(self, fs)

    def place(src: Any, root: Any, relpath: str) -> Any:
        parts = relpath.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise mirror.UsageError(f"unsafe path {relpath!r}")
        dirfd = download._open_dir_nofollow(root, parts[:-1], create=True)
        try:
            os.replace(src, parts[-1], dst_dir_fd=dirfd)
        except OSError as exc:
            raise download.DiskError(exc, root / relpath) from exc
        finally:
            os.close(dirfd)
        _BATCH["dirs"].add(root.joinpath(*parts[:-1]))
        return root / relpath

    state.StateDB.put = put
    mirror.place = place


def flush_batch(state_db: Any) -> None:
    for d in _BATCH["dirs"]:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _BATCH["dirs"].clear()
    puts, _BATCH["puts"] = _BATCH["puts"], []
    if puts:
        state_db.put_many(puts)


def patch_p6() -> None:
    from ohpub import download

    orig = download._save_meta

    def _save_meta(path: Any, file_id: int, etag: str, total: int | None) -> None:
        if total is not None and total <= 1 << 20:
            return
        orig(path, file_id, etag, total)

    download._save_meta = _save_meta


def patch_p2(jobs: int) -> None:
    from ohpub import api

    sem = threading.BoundedSemaphore(jobs)
    orig_open = api.Client.open_storage

    def open_storage(self: Any, url: str, headers: dict[str, str], **kw: Any) -> Any:
        sem.acquire()
        try:
            resp = orig_open(self, url, headers, **kw)
        except BaseException:
            sem.release()
            raise
        orig_close = resp.close
        released = [False]

        def close() -> None:
            try:
                orig_close()
            finally:
                if not released[0]:
                    released[0] = True
                    sem.release()

        resp.close = close
        return resp

    api.Client.open_storage = open_storage


def patch_p3() -> None:
    from ohpub import api

    orig_init = api.Client.__init__

    def __init__(self: Any, *a: Any, **kw: Any) -> None:
        orig_init(self, *a, **kw)
        import requests.utils

        self.session.proxies.update(requests.utils.get_environ_proxies(self.base_url) or {})
        self.session.trust_env = False

    api.Client.__init__ = __init__


def patch_p7() -> None:
    from ohpub import api

    orig_init = api.Client.__init__

    def __init__(self: Any, *a: Any, **kw: Any) -> None:
        orig_init(self, *a, **kw)
        self.single_page_max = max(getattr(self, "single_page_max", 0), 20000)

    api.Client.__init__ = __init__


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        sys.exit(__doc__)
    split = argv.index("--")
    patches = {p.strip().upper() for p in ",".join(argv[:split]).split(",") if p.strip()}
    args = argv[split + 1 :]
    jobs = 8
    if "--jobs" in args:
        i = args.index("--jobs")
        jobs = int(args[i + 1])
    if "P2" in patches:
        api_conc = 4
        if "--api-concurrency" in args:
            api_conc = int(args[args.index("--api-concurrency") + 1])
        patch_p2(jobs)
        if "--jobs" in args:
            args[args.index("--jobs") + 1] = str(jobs + api_conc)
        else:
            args += ["--jobs", str(jobs + api_conc)]
    if "P1" in patches or "P5" in patches:
        patch_p1(grouped="P5" in patches)
    if "P5" in patches:
        patch_p5()
    if "P6" in patches:
        patch_p6()
    if "P3" in patches:
        patch_p3()
    if "P7" in patches:
        patch_p7()
    if "P4" in patches:
        sys.setswitchinterval(0.0005)
    from ohpub.cli import main as ohpub_main

    sys.argv = ["ohpub", *args]
    os.environ.setdefault("NO_COLOR", "1")
    ohpub_main()


if __name__ == "__main__":
    main()
