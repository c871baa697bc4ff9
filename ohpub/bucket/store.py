"""The S3 calls ohpub makes, on obstore (imported only here, and only when an ``s3://`` DEST
is used): put with metadata (multipart above a threshold), HEAD, paged listing, rename
(CopyObject + DeleteObject), delete, streamed read, the conditional puts of the lock, and the
two multipart calls obstore lacks (list in-progress uploads, abort one), signed with SigV4
here (stdlib) and sent with ``requests``. Every failure becomes one ``BucketError`` whose
message names the cause (no such bucket, unknown key id, bad secret, unreachable...).

Proven against ``tests/s3server.py`` by ``tests/test_s3_store.py`` (each call is the S3
operation it claims); the library choice is in ``benchmarks/S3_LIBS.md``.
"""

from __future__ import annotations

import builtins
import configparser
import datetime as dt
import hashlib
import hmac
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from ohpub.model.errors import UsageError

INSTALL_HINT = "an s3:// DEST needs the object-store extra: pip install 'ohpub[s3]'"


def _obstore() -> Any:
    """obstore, or one line saying what to install (exit 2)."""
    try:
        import obstore
        import obstore.store  # noqa: F401 - S3Store
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return obstore


def _exc() -> Any:
    """obstore's exception classes (obstore is imported by then)."""
    import obstore.exceptions

    return obstore.exceptions


class BucketError(UsageError):
    """A bucket failure the user fixes (credentials, name, endpoint): exit 2. ``kind``:
    not_found, no_bucket, bad_key_id, bad_secret, denied, wrong_region, exists, changed,
    unreachable, other."""

    def __init__(self, kind: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind


MiB = 1024 * 1024
MULTIPART_THRESHOLD = 64 * MiB
"""One PUT below, multipart above. A single PUT is one request and atomic; multipart pays
three extra requests per object but sends parts in parallel and retries a part, not the
whole object. At 64 MiB a single PUT still takes about a second on a fast link (S3 allows
5 GiB), so the retry cost stays small. ``OHPUB_S3_MULTIPART_THRESHOLD`` (bytes) overrides
it (for tests)."""
PART_SIZE = 16 * MiB
"""S3: >= 5 MiB except the last, <= 10,000 parts (156 GiB at 16 MiB)."""


def multipart_sizes() -> tuple[int, int]:
    """(threshold, part size), read when used so the override applies in-process too."""
    threshold = int(os.environ.get("OHPUB_S3_MULTIPART_THRESHOLD", MULTIPART_THRESHOLD))
    return threshold, max(5 * MiB, min(PART_SIZE, threshold))
PART_CONCURRENCY = 4  # parts in flight per file; ohpub also runs several files at once
# obstore's standard attributes: everything else in .attributes is user metadata (x-amz-meta-)
STANDARD_ATTRIBUTES = {"Content-Disposition", "Content-Encoding", "Content-Language",
                       "Content-Type", "Cache-Control", "Storage-Class"}
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None


@dataclass(frozen=True)
class Head:
    size: int
    etag: str
    metadata: dict[str, str]  # user metadata, x-amz-meta-* without the prefix
    last_modified: dt.datetime


@dataclass(frozen=True)
class Upload:
    key: str  # full key in the bucket
    upload_id: str
    initiated: str


# ---------------------------------------------------------------------------------------------
# Credentials and the store
# ---------------------------------------------------------------------------------------------


def resolve_credentials(env: dict[str, str] | None = None) -> Credentials | None:
    """Static credentials as the AWS CLI finds them: the environment first, then the profile
    ``AWS_PROFILE`` (or ``default``) of ``AWS_SHARED_CREDENTIALS_FILE`` (``~/.aws/credentials``)
    and ``AWS_CONFIG_FILE`` (``~/.aws/config``). None: leave it to obstore's own chain
    (web identity, ECS, EC2 instance metadata)."""
    env = dict(os.environ) if env is None else env
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
                           env.get("AWS_SESSION_TOKEN"))
    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    home = Path(env.get("HOME", "~")).expanduser()
    files = [(env.get("AWS_SHARED_CREDENTIALS_FILE") or str(home / ".aws/credentials"), profile),
             (env.get("AWS_CONFIG_FILE") or str(home / ".aws/config"),
              profile if profile == "default" else f"profile {profile}")]
    for path, section in files:
        parser = configparser.RawConfigParser()
        if not parser.read(path) or not parser.has_section(section):
            continue
        sec = parser[section]
        if sec.get("aws_access_key_id") and sec.get("aws_secret_access_key"):
            return Credentials(sec["aws_access_key_id"], sec["aws_secret_access_key"],
                               sec.get("aws_session_token"))
    return None


def _profile_setting(name: str, env: dict[str, str]) -> str | None:
    """``region`` / ``endpoint_url`` of the profile in ``AWS_CONFIG_FILE``."""
    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    path = env.get("AWS_CONFIG_FILE") or str(Path(env.get("HOME", "~")).expanduser()
                                              / ".aws/config")
    parser = configparser.RawConfigParser()
    section = profile if profile == "default" else f"profile {profile}"
    if parser.read(path) and parser.has_section(section):
        return parser[section].get(name)
    return None


class S3Target:
    """``s3://bucket/prefix``: every key below is relative to the prefix."""

    def __init__(self, url: str, *, endpoint: str | None = None, region: str | None = None,
                 credentials: Credentials | None = None, env: dict[str, str] | None = None,
                 max_retries: int = 3, retry_timeout_s: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
        env = dict(os.environ) if env is None else env
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.endpoint = (endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
                         or _profile_setting("endpoint_url", env))
        self.region = (region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
                       or _profile_setting("region", env) or "us-east-1")
        self.credentials = credentials or resolve_credentials(env)
        config: dict[str, Any] = {"region": self.region}
        if self.endpoint:
            config["endpoint"] = self.endpoint
        if self.credentials:
            config["access_key_id"] = self.credentials.access_key
            config["secret_access_key"] = self.credentials.secret_key
            if self.credentials.session_token:
                config["session_token"] = self.credentials.session_token
        self.store = _obstore().store.S3Store(
            self.bucket, prefix=self.prefix or None, config=config,
            client_options={"allow_http": bool(self.endpoint and
                                               self.endpoint.startswith("http://")),
                            "connect_timeout": "10s", "timeout": "300s"},
            retry_config={"max_retries": max_retries,
                          "retry_timeout": dt.timedelta(seconds=retry_timeout_s)},
        )

    def url_of(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def check(self) -> None:
        """Fail early with a clear message: a HEAD of a key in a missing bucket is a bare
        404, indistinguishable from a missing key, so ask for a listing first."""
        try:
            for _batch in _obstore().list(self.store, None, chunk_size=1):
                break
        except Exception as exc:
            raise explain(exc, f"s3://{self.bucket}/{self.prefix}") from exc

    # -- objects --------------------------------------------------------------------------

    def put_file(self, key: str, local: Path, metadata: dict[str, str]) -> str:
        """Upload a local file (multipart above MULTIPART_THRESHOLD); returns the ETag."""
        size = local.stat().st_size
        threshold, part = multipart_sizes()
        try:
            result = _obstore().put(self.store, key, local, attributes=metadata,
                                 use_multipart=size > threshold, chunk_size=part,
                                 max_concurrency=PART_CONCURRENCY)
        except Exception as exc:
            raise explain(exc, self.url_of(key)) from exc
        return result["e_tag"] or ""

    def head(self, key: str) -> Head | None:
        """Size, ETag, user metadata in one HEAD; None when there is no such key.
        (``obstore.head`` gives no metadata; a GET with ``head=True`` is a HEAD that does.)"""
        try:
            got = _obstore().get(self.store, key, options={"head": True})
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise explain(exc, self.url_of(key)) from exc
        meta = got.meta
        user = {k: v for k, v in got.attributes.items() if k not in STANDARD_ATTRIBUTES}
        return Head(meta["size"], meta["e_tag"] or "", user, meta["last_modified"])

    def list(self, prefix: str = "") -> Iterator[tuple[str, int, str]]:
        """(key, size, etag) of every object under ``prefix`` (a *directory*: ``a/b`` lists
        ``a/b/...``, not ``a/bc``), in key order. obstore follows ListObjectsV2's continuation
        tokens itself; ``chunk_size`` is only how many it hands over at once."""
        try:
            for batch in _obstore().list(self.store, prefix or None, chunk_size=1000):
                for meta in batch:
                    yield meta["path"], meta["size"], meta["e_tag"] or ""
        except Exception as exc:
            raise explain(exc, self.url_of(prefix)) from exc

    def rename(self, src: str, dst: str) -> None:
        """CopyObject (metadata copied: MetadataDirective COPY) then DeleteObject."""
        try:
            _obstore().rename(self.store, src, dst)
        except Exception as exc:
            raise explain(exc, self.url_of(src)) from exc

    def delete(self, key: str) -> None:
        """Deleting a missing key succeeds (S3's DeleteObject answers 204 either way)."""
        try:
            _obstore().delete(self.store, key)
        except Exception as exc:
            raise explain(exc, self.url_of(key)) from exc

    def read_chunks(self, key: str, chunk: int = 8 * MiB) -> Iterator[memoryview]:
        """The whole object, streamed (for verify: hash it as it comes)."""
        try:
            for part in _obstore().get(self.store, key).stream(min_chunk_size=chunk):
                yield memoryview(part)
        except Exception as exc:
            raise explain(exc, self.url_of(key)) from exc

    def put_bytes(self, key: str, body: bytes) -> str:
        try:
            return _obstore().put(self.store, key, body)["e_tag"] or ""
        except Exception as exc:
            raise explain(exc, self.url_of(key)) from exc

    def get_bytes(self, key: str) -> tuple[bytes, str] | None:
        """A small object's bytes and ETag (the lock, the state); None if absent."""
        try:
            got = _obstore().get(self.store, key)
            return bytes(got.bytes()), got.meta["e_tag"] or ""
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise explain(exc, self.url_of(key)) from exc

    def get_file(self, key: str, local: Path) -> None:
        """Stream an object into a local file."""
        with open(local, "wb") as fh:
            for part in self.read_chunks(key):
                fh.write(part)

    def md5(self, key: str) -> str:
        digest = hashlib.md5()
        for part in self.read_chunks(key):
            digest.update(part)
        return digest.hexdigest()

    # -- the lock object ------------------------------------------------------------------

    def create_lock(self, key: str, body: bytes) -> str | None:
        """PUT with If-None-Match: * . Returns the lock's ETag, or None if it already exists
        (someone else holds it). Atomic on S3 (since 2024-08) and on the test server."""
        try:
            return _obstore().put(self.store, key, body, mode="create")["e_tag"] or ""
        except _exc().AlreadyExistsError:
            return None
        except Exception as exc:
            raise explain(exc, self.url_of(key)) from exc

    def refresh_lock(self, key: str, body: bytes, etag: str) -> str | None:
        """PUT with If-Match: the ETag we hold. None if it changed (the lock was taken over)."""
        try:
            return _obstore().put(self.store, key, body, mode={"e_tag": etag})["e_tag"] or ""
        except _exc().PreconditionError:
            return None
        except Exception as exc:
            raise explain(exc, self.url_of(key)) from exc

    # -- in-progress multipart uploads (not in obstore: signed requests of our own) --------

    def list_uploads(self, prefix: str = "") -> builtins.list[Upload]:
        """ListMultipartUploads under ``prefix`` (a plain key prefix), every page."""
        uploads: builtins.list[Upload] = []
        query = {"uploads": "", "prefix": self._full(prefix)}
        while True:
            root = ET.fromstring(self._signed("GET", "", query).content)
            for up in root.iter(S3_NS + "Upload"):
                uploads.append(Upload(up.findtext(S3_NS + "Key") or "",
                                      up.findtext(S3_NS + "UploadId") or "",
                                      up.findtext(S3_NS + "Initiated") or ""))
            if root.findtext(S3_NS + "IsTruncated") != "true":
                return uploads
            query["key-marker"] = root.findtext(S3_NS + "NextKeyMarker") or ""
            query["upload-id-marker"] = root.findtext(S3_NS + "NextUploadIdMarker") or ""

    def abort_upload(self, upload: Upload) -> None:
        """AbortMultipartUpload (``upload.key`` is the full key, as listed)."""
        self._signed("DELETE", upload.key, {"uploadId": upload.upload_id}, full=True)

    def _signed(self, method: str, key: str, query: dict[str, str], *,
                full: bool = False) -> Any:
        import requests

        if self.credentials is None:
            raise BucketError("denied", "listing or aborting multipart uploads needs static "
                          "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
        # path-style (bucket in the path): what S3 compatibles all take; AWS still does
        endpoint = self.endpoint or f"https://s3.{self.region}.amazonaws.com"
        path = f"/{self.bucket}/" + quote(key if full else self._full(key), safe="/~") \
            if key else f"/{self.bucket}"
        headers = sigv4_headers(method, endpoint, path, query, self.region, self.credentials)
        url = endpoint + path + "?" + canonical_query(query)  # sent exactly as signed
        try:
            resp = requests.request(method, url, headers=headers, timeout=(10, 60))
        except requests.RequestException as exc:
            raise BucketError("unreachable", f"cannot reach {endpoint}: {exc}") from exc
        if resp.status_code >= 300:
            code = re.search(r"<Code>([^<]+)</Code>", resp.text)
            raise _from_code(code.group(1) if code else str(resp.status_code),
                             f"s3://{self.bucket}/{key}", resp.text)
        return resp


def canonical_query(query: dict[str, str]) -> str:
    """SigV4's query string: sorted, every byte but A-Za-z0-9-_.~ percent-encoded."""
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                    for k, v in sorted(query.items()))


def sigv4_headers(method: str, endpoint: str, path: str, query: dict[str, str], region: str,
                  creds: Credentials, payload: bytes = b"") -> dict[str, str]:
    """AWS Signature Version 4 headers for a path-style S3 request (``path`` percent-encoded
    as sent). For the two bucket calls obstore lacks; stdlib only."""
    now = dt.datetime.now(dt.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = urlsplit(endpoint).netloc
    payload_hash = hashlib.sha256(payload).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    if creds.session_token:
        headers["x-amz-security-token"] = creds.session_token
    signed = ";".join(sorted(headers))
    canonical = "\n".join([method, path, canonical_query(query),
                           "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed,
                           payload_hash])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + creds.secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                                f"SignedHeaders={signed}, Signature={signature}")
    del headers["host"]  # requests sets it, identically
    return headers


# ---------------------------------------------------------------------------------------------
# Errors: one clear message each
# ---------------------------------------------------------------------------------------------

_MESSAGES = {
    "NoSuchKey": ("not_found", "{url}: no such object"),
    "NoSuchBucket": ("no_bucket", "{url}: the bucket does not exist (check the name, and the "
                     "endpoint AWS_ENDPOINT_URL if not AWS)"),
    "InvalidAccessKeyId": ("bad_key_id", "{url}: the access key id is not known to this "
                           "endpoint (AWS_ACCESS_KEY_ID / AWS_PROFILE)"),
    "SignatureDoesNotMatch": ("bad_secret", "{url}: the secret access key does not match the "
                              "access key id (AWS_SECRET_ACCESS_KEY)"),
    "AccessDenied": ("denied", "{url}: access denied: the credentials work but may not do "
                     "this (bucket policy / IAM)"),
    "AuthorizationHeaderMalformed": ("wrong_region", "{url}: wrong region for this bucket "
                                     "(AWS_REGION){hint}"),
    "PreconditionFailed": ("changed", "{url}: changed meanwhile (precondition failed)"),
}


def _from_code(code: str, url: str, text: str = "") -> BucketError:
    kind, message = _MESSAGES.get(code, ("other", "{url}: S3 error " + code))
    region = re.search(r"<Region>([^<]+)</Region>", text)
    return BucketError(kind, message.format(url=url, hint=f": it is in {region.group(1)}"
                                        if region else ""))


def explain(exc: BaseException, url: str) -> BucketError:
    """Map an obstore exception to one :class:`BucketError`. obstore keeps the server's status
    line and XML body in the message; the S3 ``<Code>`` there is the reliable part."""
    text = str(exc)
    code = re.search(r"<Code>([^<]+)</Code>", text)
    if code:
        return _from_code(code.group(1), url, text)
    if isinstance(exc, FileNotFoundError):
        return BucketError("not_found", f"{url}: no such object")
    if isinstance(exc, _exc().AlreadyExistsError):
        return BucketError("exists", f"{url}: already exists")
    if isinstance(exc, _exc().PreconditionError):
        return BucketError("changed", f"{url}: changed meanwhile (precondition failed)")
    if isinstance(exc, (_exc().PermissionDeniedError, _exc().UnauthenticatedError)):
        # A HEAD answer has no body, so no S3 code: 403 is all there is.
        return BucketError("denied", f"{url}: access denied (403): check the credentials "
                       "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_PROFILE) and the bucket "
                       "policy")
    if isinstance(exc, _exc().GenericError) and re.search(
            r"error sending request|[Cc]onnection refused|dns error|timed out", text):
        return BucketError("unreachable", f"{url}: cannot reach the endpoint: "
                       + text.split("\n", 1)[0][:200])
    if isinstance(exc, _exc().BaseError | OSError):
        return BucketError("other", f"{url}: {text.splitlines()[0][:300] if text else exc!r}")
    return BucketError("other", f"{url}: {exc!r}")
