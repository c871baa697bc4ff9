"""obstore vs s3fs for ohpub's S3 destination, measured against tests/s3server.py (moto).

For each library, in a child process of its own, against a fresh S3 server per run:

* **small**: N objects of S bytes (default 500 x 20 KB) put (with user metadata), head
  (size, ETag and metadata: one HEAD each), get, from a pool of T threads (default 8; ohpub is
  thread-based, so every call is the library's *sync* API); for s3fs also its batch API
  (``fs.pipe`` / ``fs.cat`` of the whole dict, its own asyncio concurrency);
* **big**: B files of M MiB (default 3 x 64 MiB) put from disk by multipart (part P MiB,
  default 8, the library's default part concurrency) and got back to disk by streaming;
* for every phase: wall seconds, client CPU seconds (all its threads), server CPU seconds,
  the requests the server counted by operation, and the TCP connections it saw;
* per library: import time (fresh interpreters, and ``-X importtime``), time to the first
  answered request (import + client + one HEAD), OS threads in the client, peak RSS;
* ``--sizes``: installed size of each library with its dependencies (two fresh venvs, the
  ``du -sk`` of site-packages minus a bare venv's);
* ``--features``: which of the capabilities ohpub needs each library has, checked against
  the server (conditional create, metadata on put and head, multipart abort and listing,
  copy with metadata, standard AWS environment and profile credentials).

Run: ``python benchmarks/s3_libs.py --runs 3 --sizes --features --json out.json``
(``--quick`` for a smoke run). Needs moto[server], obstore and s3fs in this interpreter.
Every server is on 127.0.0.1; every client is told so explicitly, and the AWS SDKs'
instance-metadata look-ups are pointed at a closed loopback port or disabled.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.s3server import S3Server  # noqa: E402

MiB = 1024 * 1024
LIBS = ("obstore", "s3fs")  # the two candidates; "boto3" (what s3fs wraps) as a reference
ALL_LIBS = (*LIBS, "boto3")
IMPORTS = {"obstore": "import obstore, obstore.store", "s3fs": "import s3fs",
           "boto3": "import boto3"}

# No client may look for credentials beyond loopback (EC2 instance metadata is 169.254.x).
SAFE_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",  # botocore (s3fs)
    "AWS_METADATA_ENDPOINT": "http://127.0.0.1:9",  # object_store (obstore): closed port
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    env.update(SAFE_ENV)
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------------------------------
# The two clients, behind the same few calls
# ---------------------------------------------------------------------------------------------


class ObstoreClient:
    def __init__(self, endpoint: str, key: str, secret: str, region: str, bucket: str) -> None:
        import obstore
        from obstore.store import S3Store

        self.obs = obstore
        self.store = S3Store(bucket, endpoint=endpoint, access_key_id=key,
                             secret_access_key=secret, region=region,
                             client_options={"allow_http": True})

    def put_bytes(self, key: str, data: bytes, meta: dict[str, str]) -> None:
        self.obs.put(self.store, key, data, attributes=meta)  # type: ignore[arg-type]

    def head(self, key: str) -> tuple[int, str, dict[str, str]]:
        got = self.obs.get(self.store, key, options={"head": True})  # one HEAD request
        meta = got.meta
        return meta["size"], meta["e_tag"] or "", dict(got.attributes)

    def get_bytes(self, key: str) -> int:
        return len(self.obs.get(self.store, key).bytes())

    def put_file(self, key: str, path: Path, part: int) -> None:
        self.obs.put(self.store, key, path, chunk_size=part)

    def get_file(self, key: str, path: Path) -> None:
        with open(path, "wb") as out:
            for chunk in self.obs.get(self.store, key).stream(min_chunk_size=8 * MiB):
                out.write(chunk)


class S3fsClient:
    def __init__(self, endpoint: str, key: str, secret: str, region: str, bucket: str) -> None:
        import s3fs

        self.bucket = bucket
        self.fs = s3fs.S3FileSystem(key=key, secret=secret, endpoint_url=endpoint,
                                    client_kwargs={"region_name": region},
                                    skip_instance_cache=True, use_listings_cache=False)

    def put_bytes(self, key: str, data: bytes, meta: dict[str, str]) -> None:
        self.fs.pipe_file(f"{self.bucket}/{key}", data, Metadata=meta)

    def head(self, key: str) -> tuple[int, str, dict[str, str]]:
        h = self.fs.call_s3("head_object", Bucket=self.bucket, Key=key)  # one HEAD request
        return h["ContentLength"], h["ETag"], h["Metadata"]

    def get_bytes(self, key: str) -> int:
        # max_concurrency=1: one GET. By default cat_file first HEADs the object for its size
        # (to split big objects into concurrent ranged GETs): two requests per small object.
        return len(self.fs.cat_file(f"{self.bucket}/{key}", max_concurrency=1))

    def put_file(self, key: str, path: Path, part: int) -> None:
        self.fs.put_file(str(path), f"{self.bucket}/{key}", chunksize=part)

    def get_file(self, key: str, path: Path) -> None:
        self.fs.get_file(f"{self.bucket}/{key}", str(path))

    # s3fs's own batch calls: one sync call, concurrency inside its event loop
    def put_batch(self, items: dict[str, bytes]) -> None:
        self.fs.pipe({f"{self.bucket}/{k}": v for k, v in items.items()})

    def get_batch(self, keys: list[str]) -> int:
        got = self.fs.cat([f"{self.bucket}/{k}" for k in keys], max_concurrency=1)
        return sum(len(v) for v in got.values())


class Boto3Client:
    """The reference: botocore's own sync client (thread-safe; one shared by the threads)."""

    def __init__(self, endpoint: str, key: str, secret: str, region: str, bucket: str) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config
        from botocore.exceptions import ClientError

        self.bucket = bucket
        self.c = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                              aws_secret_access_key=secret, region_name=region,
                              config=Config(max_pool_connections=16))
        self.transfer = TransferConfig
        self.client_error = ClientError

    def put_bytes(self, key: str, data: bytes, meta: dict[str, str]) -> None:
        self.c.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=meta)

    def head(self, key: str) -> tuple[int, str, dict[str, str]]:
        try:
            h = self.c.head_object(Bucket=self.bucket, Key=key)
        except self.client_error as exc:
            raise FileNotFoundError(key) from exc
        return h["ContentLength"], h["ETag"], h["Metadata"]

    def get_bytes(self, key: str) -> int:
        return len(self.c.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def put_file(self, key: str, path: Path, part: int) -> None:
        cfg = self.transfer(multipart_threshold=part, multipart_chunksize=part)
        self.c.upload_file(str(path), self.bucket, key, Config=cfg)

    def get_file(self, key: str, path: Path) -> None:
        self.c.download_file(self.bucket, key, str(path))


CLIENTS: dict[str, Callable[..., Any]] = {"obstore": ObstoreClient, "s3fs": S3fsClient,
                                          "boto3": Boto3Client}


# ---------------------------------------------------------------------------------------------
# The worker: one library, one server, every phase
# ---------------------------------------------------------------------------------------------


def _control(endpoint: str, what: str, method: str = "GET") -> Any:
    host, port = endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, "/_s3server/" + what)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def phase(out: dict[str, Any], name: str, endpoint: str, server_pid: int) -> Iterator[None]:
    _control(endpoint, "reset", "POST")
    t0, c0, s0 = time.perf_counter(), time.process_time(), _proc_cpu(server_pid)
    yield
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stats = _control(endpoint, "counts")
    out[name] = {"seconds": round(wall, 3), "client_cpu": round(cpu, 3),
                 "server_cpu": round(_proc_cpu(server_pid) - s0, 3),
                 "requests": {k: v for k, v in stats["ops"].items() if v},
                 "statuses": stats["statuses"], "connections": stats["connections"],
                 "bytes_in": stats["bytes_in"], "bytes_out": stats["bytes_out"]}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    lib = args.worker
    t0 = time.perf_counter()
    client = CLIENTS[lib](args.endpoint, args.key, args.secret, args.region, args.bucket)
    out: dict[str, Any] = {"lib": lib, "client_seconds": round(time.perf_counter() - t0, 3)}
    t0 = time.perf_counter()
    with contextlib.suppress(FileNotFoundError):  # warm up: s3fs makes its session lazily
        client.head("warm-up/missing")
    out["first_call_seconds"] = round(time.perf_counter() - t0, 3)
    phases: dict[str, Any] = {}
    n, size, threads = args.small_count, args.small_size, args.threads
    payloads = {f"small/{i:05d}": os.urandom(size) for i in range(n)}
    metas = {k: {"ohpub-md5": hashlib.md5(v).hexdigest()} for k, v in payloads.items()}
    pool = cf.ThreadPoolExecutor(threads)

    def each(fn: Callable[[str], Any]) -> list[Any]:
        return list(pool.map(fn, payloads))

    with phase(phases, "small_put", args.endpoint, args.server_pid):
        each(lambda k: client.put_bytes(k, payloads[k], metas[k]))
    with phase(phases, "small_head", args.endpoint, args.server_pid):
        heads = each(client.head)
    assert all(h[0] == size and h[2]["ohpub-md5"] == metas[k]["ohpub-md5"]
               for h, k in zip(heads, payloads, strict=True))
    with phase(phases, "small_get", args.endpoint, args.server_pid):
        assert sum(each(client.get_bytes)) == n * size
    if hasattr(client, "put_batch"):
        batch = {"batch/" + k: v for k, v in payloads.items()}
        with phase(phases, "small_put_batch", args.endpoint, args.server_pid):
            client.put_batch(batch)
        with phase(phases, "small_get_batch", args.endpoint, args.server_pid):
            assert client.get_batch(list(batch)) == n * size
    out["threads_after_small"] = len(os.listdir("/proc/self/task"))
    pool.shutdown()

    work = Path(tempfile.mkdtemp(prefix="ohpub-s3bench-"))
    try:
        files = []
        for i in range(args.big_count):
            path = work / f"big{i}.bin"
            with open(path, "wb") as f:
                for _ in range(args.big_mib):
                    f.write(os.urandom(MiB))
            files.append(path)
        part = args.part_mib * MiB
        with phase(phases, "big_put", args.endpoint, args.server_pid):
            for i, path in enumerate(files):
                client.put_file(f"big/{i}", path, part)
        with phase(phases, "big_get", args.endpoint, args.server_pid):
            for i in range(len(files)):
                client.get_file(f"big/{i}", work / f"back{i}.bin")
        for i, path in enumerate(files):
            back = work / f"back{i}.bin"
            assert back.stat().st_size == path.stat().st_size
            with open(path, "rb") as a, open(back, "rb") as b:
                assert hashlib.md5(a.read()).digest() == hashlib.md5(b.read()).digest()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["phases"] = phases
    out["threads_os"] = len(os.listdir("/proc/self/task"))
    out["threads_python"] = threading.active_count()
    out["thread_names"] = sorted({t.name.rstrip("0123456789_") for t in threading.enumerate()})
    out["maxrss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def run_worker(lib: str, args: argparse.Namespace) -> dict[str, Any]:
    with S3Server(http_server=args.http) as s3:
        s3.create_bucket("bench")
        cmd = [sys.executable, __file__, "--worker", lib, "--endpoint", s3.endpoint_url,
               "--key", s3.access_key, "--secret", s3.secret_key, "--region", s3.region,
               "--bucket", "bench", "--server-pid", str(s3.pid),
               "--small-count", str(args.small_count), "--small-size", str(args.small_size),
               "--big-count", str(args.big_count), "--big-mib", str(args.big_mib),
               "--part-mib", str(args.part_mib), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True,
                              timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"{lib} worker failed:\n{proc.stderr[-4000:]}\n"
                               f"server log:\n{s3.log_text()[-2000:]}")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result


# ---------------------------------------------------------------------------------------------
# Import time, time to first request, installed size
# ---------------------------------------------------------------------------------------------


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
    return time.perf_counter() - t0


def import_times(runs: int, libs: list[str]) -> dict[str, Any]:
    env = child_env()
    bare = [_timed([sys.executable, "-c", "pass"], env) for _ in range(runs)]
    out: dict[str, Any] = {"bare_interpreter_s": round(statistics.median(bare), 3)}
    for lib in libs:
        walls = [_timed([sys.executable, "-c", IMPORTS[lib]], env) for _ in range(runs)]
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", IMPORTS[lib]], env=env,
                              capture_output=True, text=True, check=True, timeout=120)
        cumulative = 0
        modules = 0
        for line in proc.stderr.splitlines():
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            modules += 1
            _self, cum, name = (p.strip() for p in line[len("import time:"):].split("|"))
            if name == lib:
                cumulative = int(cum)
        out[lib] = {"wall_minus_bare_s": round(statistics.median(walls) - out[
            "bare_interpreter_s"], 3), "importtime_cumulative_s": round(cumulative / 1e6, 3),
            "modules_imported": modules}
    return out


FIRST_REQUEST = {
    "obstore": """
import time; t0 = time.perf_counter()
import obstore
from obstore.store import S3Store
s = S3Store("bench", endpoint=E, access_key_id=K, secret_access_key=S, region=R,
            client_options={"allow_http": True})
obstore.head(s, "k")
print(time.perf_counter() - t0)
""",
    "boto3": """
import time; t0 = time.perf_counter()
import boto3
c = boto3.client("s3", endpoint_url=E, aws_access_key_id=K, aws_secret_access_key=S,
                 region_name=R)
c.head_object(Bucket="bench", Key="k")
print(time.perf_counter() - t0)
""",
    "s3fs": """
import time; t0 = time.perf_counter()
import s3fs
fs = s3fs.S3FileSystem(key=K, secret=S, endpoint_url=E, client_kwargs={"region_name": R})
fs.info("bench/k")
print(time.perf_counter() - t0)
""",
}


def first_request_times(runs: int, libs: list[str]) -> dict[str, float]:
    out = {}
    with S3Server() as s3:
        s3.create_bucket("bench")
        _put_one(s3)
        pre = f"E, K, S, R = {s3.endpoint_url!r}, {s3.access_key!r}, {s3.secret_key!r}, " \
              f"{s3.region!r}\n"
        for lib in libs:
            times = []
            for _ in range(runs):
                proc = subprocess.run([sys.executable, "-c", pre + FIRST_REQUEST[lib]],
                                      env=child_env(), capture_output=True, text=True,
                                      check=True, timeout=120)
                times.append(float(proc.stdout.strip()))
            out[lib] = round(statistics.median(times), 3)
    return out


def _put_one(s3: S3Server) -> None:
    import obstore
    from obstore.store import S3Store

    store = S3Store("bench", endpoint=s3.endpoint_url, access_key_id=s3.access_key,
                    secret_access_key=s3.secret_key, region=s3.region,
                    client_options={"allow_http": True})
    obstore.put(store, "k", b"x")


def installed_sizes(libs: list[str]) -> dict[str, Any]:
    """du -sk of site-packages in fresh venvs, minus a bare venv's (pip, setuptools)."""
    base = Path(tempfile.mkdtemp(prefix="ohpub-s3size-"))
    out: dict[str, Any] = {}
    try:
        def site(venv: Path) -> Path:
            return next((venv / "lib").glob("python3*/site-packages"))

        def du(path: Path) -> int:
            return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True,
                                      check=True).stdout.split()[0])

        sizes = {}
        for name, pkgs in [("bare", []), *((lib, [lib]) for lib in libs)]:
            venv = base / name
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            if pkgs:
                subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                                "--disable-pip-version-check", *pkgs], check=True,
                               capture_output=True, timeout=900)
            sizes[name] = du(site(venv))
            if pkgs:
                listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list",
                                         "--format=json", "--disable-pip-version-check"],
                                        capture_output=True, text=True, check=True).stdout
                dists = {d["name"]: d["version"] for d in json.loads(listed)
                         if d["name"] not in ("pip", "setuptools", "wheel")}
                out[name] = {"dists": dists}
        for name in libs:
            out[name]["kib"] = sizes[name] - sizes["bare"]
            out[name]["mib"] = round((sizes[name] - sizes["bare"]) / 1024, 1)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------
# Capabilities, checked against the server
# ---------------------------------------------------------------------------------------------

FEATURES_OBSTORE = r"""
import json, os, obstore
from obstore.store import S3Store
from obstore.exceptions import AlreadyExistsError
res = {}
def store(**kw):
    return S3Store(B, client_options={"allow_http": True}, **kw)
s = store(endpoint=E, access_key_id=K, secret_access_key=S, region=R)
obstore.put(s, "lock", b"1", mode="create")
try:
    obstore.put(s, "lock", b"2", mode="create"); res["conditional_create"] = "no: second create won"
except AlreadyExistsError:
    res["conditional_create"] = "yes: put(mode='create') -> AlreadyExistsError"
obstore.put(s, "m", b"x", attributes={"ohpub-md5": "abc"})
res["metadata_put"] = "yes: put(attributes={'ohpub-md5': ...})"
h = obstore.head(s, "m")
a = obstore.get(s, "m", options={"head": True}).attributes
res["metadata_head"] = ("partly: head() returns size/etag only; get(options={'head': True})"
                        " is one HEAD with .attributes" if a.get("ohpub-md5") == "abc" else "no")
big = os.urandom(6 * 1024 * 1024)
obstore.put(s, "mp", big, chunk_size=5 * 1024 * 1024)
res["multipart"] = "yes: put() above chunk_size (default 5 MiB), parts concurrent (12)"
names = [n for n in dir(obstore) + dir(s) if "multipart" in n.lower() or "upload" in n.lower()]
res["list_inprogress_uploads"] = "no API" if not names else "maybe: " + ",".join(names)
res["abort_upload"] = ("only its own: a failed put() aborts its upload; no abort by upload id"
                       " (object_store's MultipartStore is not exposed)")
obstore.copy(s, "m", "m2")
a2 = obstore.get(s, "m2", options={"head": True}).attributes
res["copy_metadata"] = "yes: copy() keeps metadata" if a2.get("ohpub-md5") == "abc" else "no"
print(json.dumps(res))
"""

FEATURES_S3FS = r"""
import json, os, s3fs
res = {}
fs = s3fs.S3FileSystem(key=K, secret=S, endpoint_url=E, client_kwargs={"region_name": R},
                       skip_instance_cache=True)
fs.pipe_file(B + "/lock", b"1", mode="create")
try:
    fs.pipe_file(B + "/lock", b"2", mode="create"); res["conditional_create"] = "no"
except FileExistsError:
    res["conditional_create"] = "yes: pipe_file/put_file(mode='create') -> FileExistsError"
fs.pipe_file(B + "/m", b"x", Metadata={"ohpub-md5": "abc"})
res["metadata_put"] = "yes: pipe_file/put_file(..., Metadata={...}) (boto3 kwargs)"
ok = fs.metadata(B + "/m") == {"ohpub-md5": "abc"}
h = fs.call_s3("head_object", Bucket=B, Key="m")
res["metadata_head"] = ("yes: fs.metadata(path), or call_s3('head_object') for size+etag+"
                        "metadata in one HEAD" if ok and h["Metadata"] else "no")
up = fs.call_s3("create_multipart_upload", Bucket=B, Key="stale")
res["multipart"] = "yes: put_file() above 2 x chunksize (default 50 MiB), parts concurrent (10)"
ups = fs.call_s3("list_multipart_uploads", Bucket=B, Prefix="st")["Uploads"]
res["list_inprogress_uploads"] = ("yes: call_s3('list_multipart_uploads', Prefix=...), "
                                  "fs.list_multipart_uploads(bucket)") if ups else "no"
fs.call_s3("abort_multipart_upload", Bucket=B, Key="stale", UploadId=up["UploadId"])
left = fs.call_s3("list_multipart_uploads", Bucket=B).get("Uploads", [])
res["abort_upload"] = "yes: call_s3('abort_multipart_upload'), fs.abort_mpu()" if not left else "no"
fs.copy(B + "/m", B + "/m2")
kept = fs.metadata(B + "/m2") == {"ohpub-md5": "abc"}
res["copy_metadata"] = "yes: copy() keeps metadata" if kept else "no"
print(json.dumps(res))
"""

ENV_OBSTORE = r"""
import obstore
from obstore.store import S3Store
obstore.head(S3Store(B, retry_config={"max_retries": 0}), "m")
print("ok")
"""
ENV_S3FS = r"""
import s3fs
print("ok" if s3fs.S3FileSystem(skip_instance_cache=True).info(B + "/m")["size"] == 1 else "no")
"""


def features() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with S3Server() as s3:
        pre = f"E, K, S, R = {s3.endpoint_url!r}, {s3.access_key!r}, {s3.secret_key!r}, " \
              f"{s3.region!r}\n"
        for lib, code in (("obstore", FEATURES_OBSTORE), ("s3fs", FEATURES_S3FS)):
            s3.create_bucket("feat-" + lib)
            s3.reset_counts()
            proc = subprocess.run([sys.executable, "-c", pre + f"B = 'feat-{lib}'\n" + code],
                                  env=child_env(),
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"{lib} features:\n{proc.stderr[-3000:]}")
            out[lib] = json.loads(proc.stdout.strip().splitlines()[-1])
            out[lib]["_requests"] = dict(s3.ops())
        # Standard AWS environment variables only (no arguments at all)
        env_vars = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                    "AWS_REGION": s3.region, "AWS_ENDPOINT_URL": s3.endpoint_url,
                    "AWS_ALLOW_HTTP": "true"}
        # A profile in AWS config files, chosen by AWS_PROFILE (endpoint_url in the profile:
        # botocore >= 1.31 reads it)
        with tempfile.TemporaryDirectory() as tmp:
            cfg, creds = Path(tmp) / "config", Path(tmp) / "credentials"
            cfg.write_text(f"[profile ohpubtest]\nregion = {s3.region}\n"
                           f"endpoint_url = {s3.endpoint_url}\n")
            creds.write_text(f"[ohpubtest]\naws_access_key_id = {s3.access_key}\n"
                             f"aws_secret_access_key = {s3.secret_key}\n")
            # the endpoint in the environment too: a client that ignored the profile's
            # endpoint_url must not go looking for AWS itself
            profile_vars = {"AWS_PROFILE": "ohpubtest", "AWS_CONFIG_FILE": str(cfg),
                            "AWS_SHARED_CREDENTIALS_FILE": str(creds),
                            "AWS_ENDPOINT_URL": s3.endpoint_url, "AWS_ALLOW_HTTP": "true"}
            for lib, code in (("obstore", ENV_OBSTORE), ("s3fs", ENV_S3FS)):
                for label, extra in (("env_credentials", env_vars),
                                     ("profile_credentials", profile_vars)):
                    try:
                        proc = subprocess.run([sys.executable, "-c",
                                               f"B = 'feat-{lib}'\n" + code],
                                              env=child_env(extra), capture_output=True,
                                              text=True, timeout=60)
                    except subprocess.TimeoutExpired:
                        out[lib][label] = "no: no answer in 60 s"
                        continue
                    ok = proc.returncode == 0 and proc.stdout.strip() == "ok"
                    errs = [ln for ln in proc.stderr.splitlines() if "Error" in ln] or [""]
                    last = errs[-1].strip()[:300]
                    out[lib][label] = "yes" if ok else f"no: {last}"
    return out


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:12]
    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "nproc": os.cpu_count(), "lscpu": lscpu, "python": platform.python_version(),
            "load": os.getloadavg()}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("obstore", "s3fs", "fsspec", "aiobotocore", "botocore", "aiohttp", "moto",
                 "boto3"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Median over runs of the per-phase figures, as rates."""
    small_mb = args.small_count * args.small_size / 1e6
    big_mib = args.big_count * args.big_mib
    out: dict[str, Any] = {}
    for name in runs[0]["phases"]:
        secs = statistics.median(r["phases"][name]["seconds"] for r in runs)
        cpu = statistics.median(r["phases"][name]["client_cpu"] for r in runs)
        srv = statistics.median(r["phases"][name]["server_cpu"] for r in runs)
        row: dict[str, Any] = {"seconds": round(secs, 3), "client_cpu": round(cpu, 3),
                               "server_cpu": round(srv, 3),
                               "runs": [r["phases"][name]["seconds"] for r in runs]}
        if name.startswith("small"):
            row["objects_per_s"] = round(args.small_count / secs, 1)
            row["MB_per_s"] = round(small_mb / secs, 2)
            row["client_cpu_ms_per_object"] = round(1000 * cpu / args.small_count, 3)
        else:
            row["MiB_per_s"] = round(big_mib / secs, 1)
        row["requests"] = runs[-1]["phases"][name]["requests"]
        row["connections"] = runs[-1]["phases"][name]["connections"]
        out[name] = row
    return out


def table(report: dict[str, Any]) -> str:
    """The medians as a Markdown table."""
    lines = ["| phase | library | median s (runs) | rate | client CPU s | server CPU s | "
             "requests | TCP conns |", "|---|---|---|---|---|---|---|---|"]
    phases = sorted({p for lib in report["summary"].values() for p in lib},
                    key=lambda p: list(PHASE_ORDER).index(p))
    for name in phases:
        for lib, rows in report["summary"].items():
            if name not in rows:
                continue
            r = rows[name]
            rate = (f"{r['objects_per_s']:.0f} obj/s" if "objects_per_s" in r
                    else f"{r['MiB_per_s']:.0f} MiB/s")
            reqs = ", ".join(f"{k} {v}" for k, v in sorted(r["requests"].items()))
            runs = "/".join(f"{x:.2f}" for x in r["runs"])
            lines.append(f"| {name} | {lib} | {r['seconds']:.2f} ({runs}) | {rate} | "
                         f"{r['client_cpu']:.2f} | {r['server_cpu']:.2f} | {reqs} | "
                         f"{r['connections']} |")
    return "\n".join(lines)


PHASE_ORDER = ("small_put", "small_put_batch", "small_head", "small_get", "small_get_batch",
               "big_put", "big_get")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--libs", default=",".join(LIBS),
                   help=f"comma-separated, of {', '.join(ALL_LIBS)}")
    p.add_argument("--small-count", type=int, default=500)
    p.add_argument("--small-size", type=int, default=20_000)
    p.add_argument("--big-count", type=int, default=3)
    p.add_argument("--big-mib", type=int, default=64)
    p.add_argument("--part-mib", type=int, default=8)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--sizes", action="store_true", help="measure installed sizes (fresh venvs)")
    p.add_argument("--features", action="store_true", help="check capabilities")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--http", default="auto", choices=("auto", "waitress", "werkzeug"),
                   help="the S3 server's HTTP layer (auto: waitress if installed)")
    p.add_argument("--json", help="write every figure here")
    # worker mode (internal)
    p.add_argument("--worker", choices=ALL_LIBS, help=argparse.SUPPRESS)
    for name in ("endpoint", "key", "secret", "region", "bucket"):
        p.add_argument("--" + name, help=argparse.SUPPRESS)
    p.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if args.quick:
        args.runs, args.small_count, args.small_size = 1, 20, 2_000
        args.big_count, args.big_mib, args.part_mib = 1, 11, 5
    libs = [lib for lib in args.libs.split(",") if lib]
    report: dict[str, Any] = {"machine": machine(), "versions": versions(),
                              "params": {k: getattr(args, k) for k in (
                                  "runs", "small_count", "small_size", "big_count", "big_mib",
                                  "part_mib", "threads")}}
    print(f"# {report['machine']['date']}, load {report['machine']['load']}", flush=True)
    report["imports"] = import_times(3 if args.quick else 5, libs)
    print("imports", json.dumps(report["imports"]), flush=True)
    report["first_request_s"] = first_request_times(1 if args.quick else 3, libs)
    print("first request", json.dumps(report["first_request_s"]), flush=True)
    if args.features:
        report["features"] = features()
        print("features", json.dumps(report["features"], indent=1), flush=True)
    if args.sizes:
        report["sizes"] = installed_sizes(libs)
        print("sizes", json.dumps(report["sizes"]), flush=True)
    report["runs"] = {}
    report["load_per_run"] = []
    for run in range(args.runs):
        for lib in libs:  # alternate libraries so drift in load hits both alike
            result = run_worker(lib, args)
            result["load_after"] = os.getloadavg()
            report["runs"].setdefault(lib, []).append(result)
            print(f"run {run + 1} {lib}: " + ", ".join(
                f"{k} {v['seconds']}s" for k, v in result["phases"].items())
                + f"; load {result['load_after'][0]:.2f}", flush=True)
    report["summary"] = {lib: summarise(report["runs"][lib], args) for lib in libs}
    report["summary_misc"] = {lib: {k: report["runs"][lib][-1][k] for k in (
        "client_seconds", "first_call_seconds", "threads_after_small", "threads_os",
        "threads_python", "thread_names", "maxrss_mib")} for lib in libs}
    report["machine"]["load_end"] = os.getloadavg()
    report["http_server"] = S3Server(http_server=args.http).http_server
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
