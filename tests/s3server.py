"""An S3 server for tests and benchmarks: moto's server mode in a child process, on loopback.

:class:`S3Server` starts ``python tests/s3server.py`` as a **separate process** that speaks real
HTTP/1.1 (see "HTTP server" below) on ``127.0.0.1`` and an ephemeral port. Inside
it runs moto's WSGI application (the same ``DomainDispatcherApplication`` that
``python -m moto.server`` and ``ThreadedMotoServer`` serve), wrapped in a small WSGI middleware
of ours that

* **counts requests** by method class (``GET PUT HEAD POST DELETE LIST``, ``LIST`` being a
  listing GET) and by S3 operation (``PutObject``, ``UploadPart``, ``ListObjectsV2``...), with
  the status codes and bytes in/out, readable and resettable from the parent through
  ``/_s3server/*`` control paths (no S3 bucket name can begin with ``_``);
* **checks credentials like S3 does** (moto itself accepts any credentials): an unknown access
  key id answers ``403 InvalidAccessKeyId``, a bad SigV4 signature (wrong secret)
  ``403 SignatureDoesNotMatch``, a credential scope for another region
  ``400 AuthorizationHeaderMalformed``, an unsigned request ``403 AccessDenied``. Pass
  ``check_auth=False`` to leave moto's accept-anything behaviour;
* **serialises conditional writes** (``If-None-Match``/``If-Match`` on PUT and on
  CompleteMultipartUpload): moto checks the condition and then stores, unlocked, so two
  racing creates of one lock object could both succeed; on S3 only one does;
* **slows chosen requests down** on demand (:meth:`S3Server.delay`: an operation, on keys
  matching a pattern, is held that many seconds before moto answers it; the request has
  arrived whole, so it is stored when the hold ends, as S3 stores a PUT it received), until
  :meth:`S3Server.clear_delays` lets every held request go at once.

moto's own ``/moto-api/recorder/`` can also log requests, but it appends every request *with
its base64 body* to a file in the server's working directory; fine for replay, far too heavy
for counting a 64 MiB upload, so the counting is ours.

Typical use::

    with S3Server() as s3:                     # child started, answering; stopped on exit
        s3.create_bucket("mirror")
        client = make_client(endpoint_url=s3.endpoint_url, key=s3.access_key,
                             secret=s3.secret_key, region=s3.region)   # any S3 client
        ...
        assert s3.counts()["PUT"] == 1         # or s3.ops()["PutObject"]

``S3Server.env()`` gives the standard ``AWS_*`` variables for a client in a child process.
moto's part-size rule is AWS's (every part but the last >= 5 MiB); ``min_part_size=`` lowers it.
``max_keys=`` sets the page size of listings that do not ask for one (moto's default: 1000),
so paging shows with a few keys.

**HTTP server.** moto's own (werkzeug's development server) answers every request with
``Connection: close``: one TCP connection per request, unlike S3. With ``waitress`` installed
(``http_server="auto"``, the default, or ``"waitress"``) moto's application is served by
waitress instead, which keeps connections alive as S3 does (32 worker threads). waitress drops
request headers whose names contain ``_`` (so ``x-amz-meta-a_b`` is lost; werkzeug keeps it);
``OHPUB_S3SERVER_HTTP=werkzeug`` forces moto's own.

This module imports without moto; only the child needs it: ``pip install 'moto[server]'``, or
the lighter ``pip install 'moto[s3]' flask flask-cors waitress`` (all the S3 server needs).
:func:`moto_available` tells a test whether to skip. Run ``python tests/s3server.py --help`` for
a foreground server.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as _dt
import hashlib
import hmac
import http.client
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

__all__ = ["METHOD_CLASSES", "S3Server", "classify", "moto_available"]

METHOD_CLASSES = ("GET", "PUT", "HEAD", "POST", "DELETE", "LIST")
CONTROL_PREFIX = "/_s3server/"
DEFAULT_ACCESS_KEY = "AKIAOHPUBTESTKEY0001"
DEFAULT_SECRET_KEY = "ohpub-test-secret-key/0000000000000000000"
DEFAULT_REGION = "us-east-1"


def moto_available() -> bool:
    """True when this interpreter can run the child: moto (its S3 part: ``moto[s3]``) and
    what its server needs (flask, flask-cors, werkzeug; all in ``moto[server]``)."""
    return all(importlib.util.find_spec(m) is not None
               for m in ("moto", "yaml", "flask", "flask_cors", "werkzeug"))


# ---------------------------------------------------------------------------------------------
# Classifying a request: which S3 operation, which method class
# ---------------------------------------------------------------------------------------------


def classify(method: str, path: str, query: str, headers: dict[str, str]) -> tuple[str, str]:
    """``(method_class, operation)`` of a path-style S3 request.

    ``path`` is the raw (still percent-encoded) path, ``query`` the raw query string,
    ``headers`` lower-cased names. ``method_class`` is the HTTP method, except that listings
    (ListObjects[V2], ListMultipartUploads, ListParts, ListBuckets) count as ``LIST``.
    """
    method = method.upper()
    params = {k for k, _ in parse_qsl(query, keep_blank_values=True)}
    parts = path.lstrip("/").split("/", 1)
    bucket = parts[0]
    key = parts[1] if len(parts) > 1 else ""
    if not bucket:
        return ("LIST", "ListBuckets") if method == "GET" else (method, "Other")
    if not key:  # bucket-level
        if method == "GET":
            if "uploads" in params:
                return "LIST", "ListMultipartUploads"
            if "list-type" in params:
                return "LIST", "ListObjectsV2"
            subresources = {"location", "versioning", "policy", "acl", "cors", "lifecycle",
                            "tagging", "versions", "encryption", "ownershipControls"}
            if params & subresources:
                return "GET", "GetBucket" + sorted(params & subresources)[0].capitalize()
            return "LIST", "ListObjects"
        return method, {
            "HEAD": "HeadBucket",
            "PUT": "CreateBucket",
            "DELETE": "DeleteBucket",
            "POST": "DeleteObjects" if "delete" in params else "PostBucket",
        }.get(method, "Other")
    if method == "GET":
        if "uploadId" in params:
            return "LIST", "ListParts"
        return "GET", "GetObjectTagging" if "tagging" in params else "GetObject"
    if method == "HEAD":
        return "HEAD", "HeadObject"
    if method == "PUT":
        copy = "x-amz-copy-source" in headers
        if "partNumber" in params:
            return "PUT", "UploadPartCopy" if copy else "UploadPart"
        if "tagging" in params:
            return "PUT", "PutObjectTagging"
        return "PUT", "CopyObject" if copy else "PutObject"
    if method == "POST":
        if "uploads" in params:
            return "POST", "CreateMultipartUpload"
        if "uploadId" in params:
            return "POST", "CompleteMultipartUpload"
        return "POST", "PostObject"
    if method == "DELETE":
        return "DELETE", "AbortMultipartUpload" if "uploadId" in params else "DeleteObject"
    return method, "Other"


# ---------------------------------------------------------------------------------------------
# The parent side
# ---------------------------------------------------------------------------------------------


class S3Server:
    """moto's S3 in a child process on ``127.0.0.1``; see the module docstring."""

    def __init__(
        self,
        *,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        region: str = DEFAULT_REGION,
        check_auth: bool = True,
        min_part_size: int | None = None,
        max_keys: int | None = None,
        http_server: str = "auto",
        port: int = 0,
        start_timeout: float = 30.0,
    ) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.check_auth = check_auth
        self.min_part_size = min_part_size
        self.max_keys = max_keys
        if http_server == "auto":
            http_server = os.environ.get("OHPUB_S3SERVER_HTTP") or (
                "waitress" if importlib.util.find_spec("waitress") else "werkzeug")
        if http_server not in ("werkzeug", "waitress"):
            raise ValueError(f"http_server: 'werkzeug' or 'waitress', not {http_server!r}")
        self.http_server = http_server
        self.host = "127.0.0.1"
        self.port = port
        self.bucket = ""  # a test's own bucket, set by the ``s3_server`` pytest fixture
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> S3Server:
        if self._proc is not None:
            return self
        if not moto_available():
            raise RuntimeError("moto's server mode is not installed: pip install 'moto[server]'")
        self._workdir = tempfile.TemporaryDirectory(prefix="ohpub-s3server-")
        work = Path(self._workdir.name)
        port_file = work / "port"
        self._log = open(work / "server.log", "w+b")  # noqa: SIM115 - kept for the child's life
        cmd = [sys.executable, str(Path(__file__).resolve()), "--host", self.host,
               "--port", str(self.port), "--port-file", str(port_file),
               "--access-key", self.access_key, "--secret-key", self.secret_key,
               "--region", self.region]
        if not self.check_auth:
            cmd.append("--no-check-auth")
        cmd += ["--http", self.http_server]
        env = dict(os.environ)
        # The child must not pick up a developer's real AWS settings; moto reads a few.
        for name in list(env):
            if name.startswith(("AWS_", "MOTO_")):
                del env[name]
        if self.min_part_size is not None:
            env["S3_UPLOAD_PART_MIN_SIZE"] = str(self.min_part_size)
        if self.max_keys is not None:  # page size of a listing that asks for no max-keys
            env["MOTO_S3_DEFAULT_MAX_KEYS"] = str(self.max_keys)
        self._proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"S3 server exited at start ({self._proc.returncode}):\n"
                                   + self.log_text()[-4000:])
            if port_file.exists() and port_file.read_text().strip():
                self.port = int(port_file.read_text())
                with contextlib.suppress(OSError):
                    if self._control("GET", "ping") == {"ok": True}:
                        return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("S3 server did not answer in time:\n" + self.log_text()[-4000:])
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def log_text(self) -> str:
        """What the child printed (werkzeug's access log is off; tracebacks land here)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        text: str = self._log.read().decode("utf-8", "replace")
        return text

    # -- helpers for tests --------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The standard AWS variables a client (boto3, s3fs, obstore ``from_env``) reads."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ALLOW_HTTP": "true",  # obstore/object_store: http:// endpoints need this
            # never look for EC2 instance credentials (169.254.169.254) from a test
            "AWS_EC2_METADATA_DISABLED": "true",  # botocore
            "AWS_METADATA_ENDPOINT": "http://127.0.0.1:9",  # object_store: a closed port
        }

    def create_bucket(self, name: str) -> None:
        """Create a bucket directly (not counted, no credentials needed)."""
        self._control("PUT", "bucket/" + quote(name, safe=""))

    def counts(self) -> dict[str, int]:
        """Requests since start or :meth:`reset_counts`, by method class (all six keys)."""
        counts: dict[str, int] = self._control("GET", "counts")["classes"]
        return counts

    def ops(self) -> collections.Counter[str]:
        """Requests by S3 operation, e.g. ``{"PutObject": 3, "HeadObject": 1}``."""
        return collections.Counter(self._control("GET", "counts")["ops"])

    def stats(self) -> dict[str, Any]:
        """Everything counted: classes, ops, statuses, bytes_in, bytes_out, total, and
        connections (distinct client address:port pairs seen, i.e. TCP connections used)."""
        stats: dict[str, Any] = self._control("GET", "counts")
        return stats

    def requests(self) -> list[dict[str, Any]]:
        """The last requests (at most 10,000): method, path, query, op, class, status."""
        reqs: list[dict[str, Any]] = self._control("GET", "requests")
        return reqs

    def reset_counts(self) -> None:
        self._control("POST", "reset")

    def delay(self, op: str, seconds: float, path: str = "") -> None:
        """Hold every request of S3 operation ``op`` (``PutObject``, ``UploadPart``...) whose
        raw path (``/bucket/key``, percent-encoded) matches the regular expression ``path``
        for ``seconds`` before moto answers it, until :meth:`clear_delays`."""
        self._control("POST", "delay?" + urlencode({"op": op, "seconds": seconds,
                                                    "path": path}))

    def clear_delays(self) -> None:
        """No more delays; the requests held now go on at once."""
        self._control("POST", "delay/clear")

    def _control(self, method: str, what: str) -> Any:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, CONTROL_PREFIX + what)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{method} {CONTROL_PREFIX}{what}: {resp.status} {body!r}")
            return json.loads(body)
        finally:
            conn.close()


# ---------------------------------------------------------------------------------------------
# The child side: moto's WSGI app, wrapped
# ---------------------------------------------------------------------------------------------

_ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message>{extra}"
    "<RequestId>{rid}</RequestId></Error>"
)
_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<sig>[0-9a-f]+)"
)


def _sigv4_expected(environ: dict[str, Any], secret: str, cred: str, signed: str) -> str | None:
    """The SigV4 signature S3 would compute for this request, or None when it cannot be
    rebuilt from the WSGI environ (a signed header werkzeug dropped, no payload hash)."""
    _, date, region, service, _term = cred.split("/")
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    raw_path, _, raw_query = raw.partition("?")
    pairs = []
    for item in raw_query.split("&") if raw_query else []:
        k, _, v = item.partition("=")
        pairs.append((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")))
    canonical_query = "&".join(f"{k}={v}" for k, v in sorted(pairs))
    lines = []
    for name in signed.split(";"):
        if name == "host":
            value = environ.get("HTTP_HOST")
        elif name in ("content-type", "content-length"):
            value = environ.get(name.upper().replace("-", "_"))
        else:
            value = environ.get("HTTP_" + name.upper().replace("-", "_"))
        if value is None:
            return None
        lines.append(f"{name}:{' '.join(str(value).split())}\n")
    payload_hash = environ.get("HTTP_X_AMZ_CONTENT_SHA256")
    amz_date = environ.get("HTTP_X_AMZ_DATE")
    if payload_hash is None or amz_date is None:
        return None
    canonical = "\n".join([environ["REQUEST_METHOD"], raw_path or "/", canonical_query,
                           "".join(lines), signed, payload_hash])
    scope = cred.split("/", 1)[1]
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


class _Middleware:
    """Counting and credential checks in front of moto's WSGI application."""

    def __init__(self, app: Callable[..., Iterable[bytes]], *, access_key: str,
                 secret_key: str, region: str, check_auth: bool) -> None:
        self.app = app
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.check_auth = check_auth
        self.lock = threading.Lock()
        # moto checks If-None-Match / If-Match and then stores, with no lock between the two
        # (moto/s3/responses.py put_object): two racing conditional PUTs could both win. S3
        # lets only one win, so conditional writes are serialised here.
        self.conditional = threading.Lock()
        self.delays: list[tuple[str, re.Pattern[str], float]] = []
        """(S3 operation, raw-path pattern, seconds) of the requests to hold."""
        self.released = threading.Event()
        """Set by ``delay/clear``: the requests held until then go on at once."""
        self.reset()

    def reset(self) -> None:
        self.classes: collections.Counter[str] = collections.Counter(
            dict.fromkeys(METHOD_CLASSES, 0))
        self.op_counts: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[str] = collections.Counter()
        self.bytes_in = 0
        self.bytes_out = 0
        self.peers: set[tuple[str, str]] = set()
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=10_000)

    # -- WSGI ---------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL_PREFIX):
            return self._control(environ, start_response, path[len(CONTROL_PREFIX):])
        if path.startswith("/moto-api/"):  # moto's own control plane: not S3, not counted
            return self.app(environ, start_response)
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or quote(path)
        raw_path = raw.partition("?")[0]
        raw_query = environ.get("QUERY_STRING", "")
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                   if k.startswith("HTTP_")}
        klass, op = classify(environ["REQUEST_METHOD"], raw_path, raw_query, headers)
        entry: dict[str, Any] = {"method": environ["REQUEST_METHOD"], "path": raw_path,
                                 "query": raw_query, "class": klass, "op": op, "status": None}
        with self.lock:
            self.classes[klass] += 1
            self.op_counts[op] += 1
            self.bytes_in += int(environ.get("CONTENT_LENGTH") or 0)
            self.peers.add((str(environ.get("REMOTE_ADDR")), str(environ.get("REMOTE_PORT"))))
            self.log.append(entry)

        def counting_start_response(status: str, hdrs: list[tuple[str, str]],
                                    exc_info: Any = None) -> Any:
            entry["status"] = int(status.split()[0])
            with self.lock:
                self.statuses[status.split()[0]] += 1
            return start_response(status, hdrs, exc_info) if exc_info else start_response(
                status, hdrs)

        refusal = self._refuse(environ) if self.check_auth else None
        if refusal is not None:
            return self._error(counting_start_response, *refusal,
                               head=environ["REQUEST_METHOD"] == "HEAD")
        self._hold(op, raw_path)
        if environ["REQUEST_METHOD"] in ("PUT", "POST") and (
                "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MATCH" in environ):
            with self.conditional:
                body = list(self.app(environ, counting_start_response))
            return self._count_out(body)
        return self._count_out(self.app(environ, counting_start_response))

    def _hold(self, op: str, raw_path: str) -> None:
        """Wait as long as a delay for this request says, or until the delays are cleared."""
        with self.lock:
            seconds = max((sec for o, pattern, sec in self.delays
                           if o == op and pattern.search(raw_path)), default=0.0)
            released = self.released
        if seconds:
            released.wait(seconds)

    def _count_out(self, body: Iterable[bytes]) -> Iterator[bytes]:
        try:
            for chunk in body:
                with self.lock:
                    self.bytes_out += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def _refuse(self, environ: dict[str, Any]) -> tuple[int, str, str, str] | None:
        """(status, code, message, extra XML) of S3's refusal, or None to let it through."""
        auth = environ.get("HTTP_AUTHORIZATION")
        if auth is None:
            query = environ.get("QUERY_STRING", "")
            if "X-Amz-Credential=" in query:  # pre-signed URL: check the key id only
                cred = unquote(query.split("X-Amz-Credential=", 1)[1].split("&", 1)[0])
                if cred.split("/", 1)[0] != self.access_key:
                    return self._bad_key(cred.split("/", 1)[0])
                return None
            return 403, "AccessDenied", "Access Denied", ""
        match = _AUTH_RE.match(auth)
        if match is None:
            return 400, "InvalidArgument", "Unsupported Authorization Type", ""
        cred, signed, sig = match["cred"], match["signed"], match["sig"]
        parts = cred.split("/")
        if len(parts) != 5:
            return 400, "AuthorizationHeaderMalformed", "The authorization header is malformed", ""
        if parts[0] != self.access_key:
            return self._bad_key(parts[0])
        if parts[2] != self.region:
            return (400, "AuthorizationHeaderMalformed",
                    f"The authorization header is malformed; the region '{parts[2]}' is "
                    f"wrong; expecting '{self.region}'", f"<Region>{self.region}</Region>")
        expected = _sigv4_expected(environ, self.secret_key, cred, signed)
        if expected is not None and not hmac.compare_digest(expected, sig):
            return (403, "SignatureDoesNotMatch",
                    "The request signature we calculated does not match the signature you "
                    "provided. Check your key and signing method.",
                    f"<AWSAccessKeyId>{parts[0]}</AWSAccessKeyId>")
        return None

    @staticmethod
    def _bad_key(key_id: str) -> tuple[int, str, str, str]:
        return (403, "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
                f"<AWSAccessKeyId>{key_id}</AWSAccessKeyId>")

    @staticmethod
    def _error(start_response: Callable[..., Any], status: int, code: str, message: str,
               extra: str, head: bool = False) -> list[bytes]:
        body = _ERROR_XML.format(code=code, message=message, extra=extra,
                                 rid=uuid.uuid4().hex[:16].upper()).encode()
        if head:
            body = b""
        reason = {400: "Bad Request", 403: "Forbidden"}.get(status, "Error")
        start_response(f"{status} {reason}", [("Content-Type", "application/xml"),
                                              ("Content-Length", str(len(body)))])
        return [body]

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any],
                 what: str) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        result: Any
        if what == "ping":
            result = {"ok": True}
        elif what == "counts" and method == "GET":
            with self.lock:
                result = {"classes": dict(self.classes), "ops": dict(self.op_counts),
                          "statuses": dict(self.statuses), "bytes_in": self.bytes_in,
                          "bytes_out": self.bytes_out, "total": sum(self.classes.values()),
                          "connections": len(self.peers)}
        elif what == "requests" and method == "GET":
            with self.lock:
                result = list(self.log)
        elif what == "reset" and method == "POST":
            with self.lock:
                self.reset()
            result = {"ok": True}
        elif what == "delay" and method == "POST":
            q = dict(parse_qsl(environ.get("QUERY_STRING", "")))
            with self.lock:
                self.delays.append((q["op"], re.compile(q.get("path", "")),
                                    float(q["seconds"])))
            result = {"ok": True}
        elif what == "delay/clear" and method == "POST":
            with self.lock:
                self.delays = []
                self.released.set()
                self.released = threading.Event()
            result = {"ok": True}
        elif what.startswith("bucket/") and method == "PUT":
            try:
                result = self._create_bucket(unquote(what[len("bucket/"):]))
            except RuntimeError as exc:
                body = str(exc).encode()
                start_response("409 Conflict", [("Content-Type", "text/plain"),
                                                ("Content-Length", str(len(body)))])
                return [body]
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"unknown control path\n"]
        body = json.dumps(result).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    def _create_bucket(self, name: str) -> dict[str, Any]:
        """Through moto's own WSGI app, as a signed-looking CreateBucket (not counted)."""
        from werkzeug.test import EnvironBuilder

        body = b""
        if self.region != "us-east-1":
            body = (f"<CreateBucketConfiguration><LocationConstraint>{self.region}"
                    "</LocationConstraint></CreateBucketConfiguration>").encode()
        now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        environ = EnvironBuilder(
            path="/" + name, method="PUT", base_url="http://127.0.0.1/", data=body,
            headers={"X-Amz-Date": now,
                     "Authorization": (f"AWS4-HMAC-SHA256 Credential={self.access_key}/"
                                       f"{now[:8]}/{self.region}/s3/aws4_request, "
                                       "SignedHeaders=host, Signature=0")},
        ).get_environ()
        status: list[str] = []

        def start_response(s: str, _h: Any, _e: Any = None) -> None:
            status.append(s)

        out = b"".join(self.app(environ, start_response))
        code = int(status[0].split()[0])
        if code != 200:
            raise RuntimeError(f"CreateBucket {name}: {status[0]} {out[:500]!r}")
        return {"ok": True}


def _keep_header_case(task_class: Any) -> None:
    """waitress capitalises response header names (``X-Amz-Meta-Ohpub-Md5``); S3 sends them
    as the application spelt them (``x-amz-meta-ohpub-md5``), and clients such as boto3 give
    metadata keys in the received case. Put the application's spelling back."""
    build = task_class.build_response_header

    def build_response_header(self: Any) -> bytes:
        spelt = {name.lower(): name for name, _ in self.response_headers}
        head: bytes = build(self)
        lines = head.split(b"\r\n")
        for i, line in enumerate(lines[1:], 1):
            name, sep, rest = line.partition(b":")
            if sep:
                lines[i] = spelt.get(name.decode("latin-1").lower(), name.decode(
                    "latin-1")).encode("latin-1") + sep + rest
        return b"\r\n".join(lines)

    task_class.build_response_header = build_response_header


def _no_continue_without_body(parser_class: Any) -> None:
    """waitress answers ``Expect: 100-continue`` on a request with ``Content-Length: 0``
    (botocore sends both for an empty PutObject) with ``100 Continue`` and then never
    dispatches the request; S3 answers it. Expect no body when there is none."""
    parse_header = parser_class.parse_header

    def patched(self: Any, header_plus: bytes) -> None:
        parse_header(self, header_plus)
        if not self.chunked and self.content_length == 0:
            self.expect_continue = False

    parser_class.parse_header = patched


def _serve(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="moto's S3 on loopback, with request counts "
                                     "under /_s3server/ (counts, requests, reset, bucket/NAME, "
                                     "delay, delay/clear)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--access-key", default=DEFAULT_ACCESS_KEY)
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument("--no-check-auth", action="store_true",
                        help="accept any credentials (moto's own behaviour)")
    parser.add_argument("--http", choices=("werkzeug", "waitress"), default="werkzeug",
                        help="werkzeug: moto's own server, one TCP connection per request; "
                        "waitress: keeps connections alive, like S3")
    parser.add_argument("--threads", type=int, default=32, help="waitress worker threads")
    args = parser.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        parser.error("this test server listens on loopback only")

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = _Middleware(DomainDispatcherApplication(create_backend_app),
                      access_key=args.access_key, secret_key=args.secret_key,
                      region=args.region, check_auth=not args.no_check_auth)

    def announce(port: int) -> None:
        if args.port_file:
            tmp = args.port_file + ".tmp"
            Path(tmp).write_text(str(port))
            os.replace(tmp, args.port_file)
        print(f"S3 (moto, {args.http}) on http://{args.host}:{port}", flush=True)

    if args.http == "waitress":
        import waitress
        import waitress.parser
        import waitress.task

        _keep_header_case(waitress.task.Task)
        _no_continue_without_body(waitress.parser.HTTPRequestParser)

        wserver: Any = waitress.create_server(app, host=args.host, port=args.port,
                                              threads=args.threads, channel_timeout=120,
                                              connection_limit=1000, ident="moto")

        def on_term_w(*_: object) -> None:
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, on_term_w)
        signal.signal(signal.SIGINT, on_term_w)
        announce(wserver.effective_port)
        try:
            wserver.run()
        finally:
            wserver.close()
        return

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *a: Any, **k: Any) -> None:  # no access log per request
            pass

    server = make_server(args.host, args.port, app, threaded=True,
                         request_handler=QuietHandler)
    announce(server.server_address[1])

    def on_term(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    _serve()
