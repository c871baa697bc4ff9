"""A faithful local Open Humans server on real loopback sockets, for tests and benchmarks.

One :class:`OHServer` runs two HTTP/1.1 listeners (keep-alive, one thread per connection):

* the **site** (``base_url``): the public JSON API under ``/api/`` and the download view
  ``/data-management/datafile-download/<id>/?key=K`` that answers ``302`` to a pre-signed URL;
* the **storage** host (``storage_url``), an S3-like bucket ``open-humans-local`` that checks the
  signature and expiry of those URLs and serves the stored bytes with ``Range``/``If-Range``.

Behaviour follows ``/work/shared/reference/open-humans-api.md``, the recorded transcripts beside
it and the Open Humans source (``api/urls.py``, ``api/api_views.py``, ``api/serializers.py``,
``data_import/models.py``, ``data_import/views.py``). Notable faithful quirks: query filters are
ignored; files of one member come back in a new random order on every request; unknown path
objects give an HTML 500; ``re_path`` routes match by *search*, so
``/api/public/project/102/datafiles`` (no slash) is the project object; every serialization of a
file mints a new key; hidden memberships serialize as a null user, and as ``{}`` when the
member's username is a substring of ``?username=``.

Stored bytes are exactly what a caller passes (``content=b"..."`` or a :class:`Content`). The
server's own data sets make bytes that match the names (:func:`named_content`): JSON lists for
``.json``, CSV with a header row for ``.csv``, real gzip streams for ``.gz``, opaque bytes
otherwise; deterministic per file id and of any size without holding it in memory.

Typical use::

    with OHServer() as server:           # started; stop() on exit
        server.load_sample()
        fid = server.add_file(basename="a.json", content=b"{}", project_id=102,
                              username="alice")
        server.faults.script(role="storage", statuses=[503])
        ...
        assert server.count(role="storage") == 1

``server.capacity = Capacity(per_record=0.002, cores=2, timeout=1.0)`` models the real server's
limits on the file listings (off by default): each listed record costs CPU time, concurrent
listings share the cores, and one still running at the timeout answers the router's HTML 500.
``LogEntry.listing`` records what every file listing asked and got; ``listing_stats()`` counts
requests, timeouts, records served and timed out, and timed-out requests re-sent unchanged.

``OHServer(tls=True)`` serves https:// on both listeners with a certificate from a CA made at
start (``trustme``); clients trust ``server.ca_bundle`` (e.g. ``REQUESTS_CA_BUNDLE``).

Run ``python -m tests.ohserver --help`` for a foreground server.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import copy
import hashlib
import hmac
import json
import math
import random
import re
import selectors
import shutil
import signal
import socket
import socketserver
import ssl
import struct
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import formatdate, parsedate_to_datetime
from functools import cache, lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit, urlunsplit

__all__ = [
    "BytesContent",
    "Capacity",
    "Content",
    "DataFile",
    "Datatype",
    "Faults",
    "Listing",
    "ListingStats",
    "LogEntry",
    "Member",
    "OHServer",
    "Project",
    "SyntheticContent",
    "named_content",
]

ROLES = ("api", "download", "storage")
CHUNK = 1 << 20  # body write size
BUCKET = "open-humans-local"
ACCESS_KEY_ID = "AKIALOCALTESTING0000"
_SECRET = b"ohserver-local-secret-key"
_EPOCH = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
_CRAWLER_RE = re.compile(r"bot|spider|crawl|slurp", re.IGNORECASE)

# ---------------------------------------------------------------------------------------------
# Stored content
# ---------------------------------------------------------------------------------------------


class Content:
    """The stored bytes of one object; subclasses serve slices without holding everything."""

    size: int

    def __init__(self) -> None:
        self._digest_lock = threading.Lock()
        self._md5: str | None = None
        self._multipart: str | None = None

    def iter_range(self, start: int, end: int, chunk: int = CHUNK) -> Iterator[bytes]:
        """Yield the bytes ``[start, end)`` in pieces of at most ``chunk`` bytes."""
        raise NotImplementedError

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        """Return the bytes ``[start, end)`` (whole object by default)."""
        return b"".join(self.iter_range(start, self.size if end is None else end))

    def md5_hex(self) -> str:
        """MD5 of the whole object, computed once and cached."""
        with self._digest_lock:
            if self._md5 is None:
                h = hashlib.md5()
                for piece in self.iter_range(0, self.size, 4 * CHUNK):
                    h.update(piece)
                self._md5 = h.hexdigest()
            return self._md5

    def multipart_etag(self) -> str:
        """S3 ETag of a two-part upload: md5 of the parts' md5s plus ``-2`` (cached)."""
        with self._digest_lock:
            if self._multipart is None:
                half = (self.size + 1) // 2
                outer = hashlib.md5()
                for a, b in ((0, half), (half, self.size)):
                    h = hashlib.md5()
                    for piece in self.iter_range(a, b, 4 * CHUNK):
                        h.update(piece)
                    outer.update(h.digest())
                self._multipart = outer.hexdigest() + "-2"
            return self._multipart


class BytesContent(Content):
    """Content held in memory."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = bytes(data)
        self.size = len(self.data)

    def iter_range(self, start: int, end: int, chunk: int = CHUNK) -> Iterator[bytes]:
        view = memoryview(self.data)
        for pos in range(start, min(end, self.size), chunk):
            yield bytes(view[pos : min(pos + chunk, end)])


@lru_cache(maxsize=1)
def _random_block() -> bytes:
    # 1 MiB + a prime-ish tail so that chunk boundaries never line up with the period.
    return random.Random(0x0A11CE).randbytes((1 << 20) + 4093)


class SyntheticContent(Content):
    """Deterministic pseudo-random content of any size, generated by slices on the fly.

    Byte ``i`` is a short text prefix naming seed and size (so two contents with different
    seeds or sizes always differ), then a 1 MiB random block read from a seed-derived offset,
    repeating. A 1 GB object costs no memory; its MD5 is computed once, lazily.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        super().__init__()
        if size < 0:
            raise ValueError("size must be >= 0")
        self.size = size
        self.seed = seed
        self._prefix = f"ohserver synthetic seed={seed} size={size}\n".encode()
        self._offset = (seed * 0x9E3779B1 + size * 7919) % len(_random_block())

    def iter_range(self, start: int, end: int, chunk: int = CHUNK) -> Iterator[bytes]:
        end = min(end, self.size)
        pos = max(0, start)
        while pos < end:
            stop = min(pos + chunk, end)
            yield self._slice(pos, stop)
            pos = stop

    def _slice(self, a: int, b: int) -> bytes:
        parts = []
        if a < len(self._prefix):
            parts.append(self._prefix[a : min(b, len(self._prefix))])
            a = min(b, len(self._prefix))
        block = _random_block()
        n = len(block)
        while a < b:
            i = (self._offset + a) % n
            take = min(b - a, n - i)
            parts.append(block[i : i + take])
            a += take
        return b"".join(parts)


class _LazyContent(Content):
    """Content of a known size built by ``factory`` on first use (for costly sample data)."""

    def __init__(self, size: int, factory: Any) -> None:
        super().__init__()
        self.size = size
        self._factory = factory
        self._data: bytes | None = None
        self._lock = threading.Lock()

    def _get(self) -> bytes:
        with self._lock:
            if self._data is None:
                data = self._factory()
                if len(data) != self.size:
                    raise AssertionError(f"lazy content is {len(data)} bytes, not {self.size}")
                self._data = data
            return self._data

    def iter_range(self, start: int, end: int, chunk: int = CHUNK) -> Iterator[bytes]:
        return BytesContent(self._get()).iter_range(start, end, chunk)


def _as_content(content: bytes | bytearray | Content) -> Content:
    if isinstance(content, Content):
        return content
    if isinstance(content, (bytes, bytearray, memoryview)):
        return BytesContent(bytes(content))
    raise TypeError(f"content must be bytes or Content, not {type(content).__name__}")


# ---------------------------------------------------------------------------------------------
# Content whose bytes match the file's name (.json, .csv, .gz)
# ---------------------------------------------------------------------------------------------


class _Cycle:
    """A cyclic byte stream made of whole pieces (records, compressed units), held once.

    Runs start at a piece boundary (``first``) and, when cut by :meth:`fit`, end at one, so
    a run of any length is valid text for formats whose pieces are whole records."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.data = b"".join(pieces)
        self.n = len(self.data)
        self.count = len(pieces)
        self.starts = [0]
        for p in pieces:
            self.starts.append(self.starts[-1] + len(p))

    def span(self, first: int, k: int) -> int:
        """Bytes in ``k`` pieces from piece ``first``."""
        full, rem = divmod(k, self.count)
        end = first + rem
        out = full * self.n - self.starts[first]
        return out + (
            self.starts[end] if end <= self.count else self.n + self.starts[end - self.count]
        )

    def fit(self, first: int, budget: int) -> tuple[int, int]:
        """(pieces, bytes) of the longest run of whole pieces from ``first`` within ``budget``."""
        full = max(0, budget) // self.n
        left = max(0, budget) - full * self.n
        t = self.starts[first] + left
        if t < self.n:
            extra = bisect.bisect_right(self.starts, t) - 1 - first
        else:
            extra = self.count - first + bisect.bisect_right(self.starts, t - self.n) - 1
        k = full * self.count + extra
        return k, self.span(first, k)

    def read(self, first: int, a: int, b: int) -> bytes:
        """Bytes ``[a, b)`` of the stream that starts at piece ``first``."""
        parts = []
        while a < b:
            i = (self.starts[first] + a) % self.n
            take = min(b - a, self.n - i)
            parts.append(self.data[i : i + take])
            a += take
        return b"".join(parts)


@dataclass
class _Run:
    """``length`` bytes of a :class:`_Cycle` from piece ``first``."""

    cycle: _Cycle
    first: int
    length: int


@dataclass
class _Deferred:
    """``length`` bytes computed on first read (a gzip trailer's CRC)."""

    length: int
    make: Any
    data: bytes | None = None


class _Composed(Content):
    """Content of a known size laid out on first use as byte strings, cyclic runs and deferred
    pieces; slices are cut from those, so a 1 GB object costs no more memory than its cycle."""

    def __init__(self, size: int) -> None:
        super().__init__()
        if size < 0:
            raise ValueError("size must be >= 0")
        self.size = size
        self._parts: list[tuple[int, bytes | _Run | _Deferred]] | None = None
        self._layout_lock = threading.Lock()

    def _layout(self) -> list[bytes | _Run | _Deferred]:
        raise NotImplementedError

    def _get_parts(self) -> list[tuple[int, bytes | _Run | _Deferred]]:
        with self._layout_lock:
            if self._parts is None:
                parts, pos = [], 0
                for part in self._layout():
                    parts.append((pos, part))
                    pos += part.length if isinstance(part, (_Run, _Deferred)) else len(part)
                if pos != self.size:
                    raise AssertionError(f"layout is {pos} bytes, not {self.size}")
                self._parts = parts
            return self._parts

    def iter_range(self, start: int, end: int, chunk: int = CHUNK) -> Iterator[bytes]:
        end = min(end, self.size)
        pos = max(0, start)
        while pos < end:
            stop = min(pos + chunk, end)
            yield self._slice(pos, stop)
            pos = stop

    def _slice(self, a: int, b: int) -> bytes:
        out = []
        for off, part in self._get_parts():
            length = part.length if isinstance(part, (_Run, _Deferred)) else len(part)
            lo, hi = max(a, off), min(b, off + length)
            if lo >= hi:
                continue
            if isinstance(part, _Run):
                out.append(part.cycle.read(part.first, lo - off, hi - off))
            elif isinstance(part, _Deferred):
                with self._layout_lock:
                    if part.data is None:
                        part.data = part.make()
                        assert len(part.data) == part.length
                out.append(part.data[lo - off : hi - off])
            else:
                out.append(part[lo - off : hi - off])
        return b"".join(out)


@dataclass(frozen=True)
class _Format:
    """A text format made of records: ``head(seed)`` (opening text and one record of the file's
    own), then whole ``record``s from a shared cycle, then ``tail(seed, pad)`` (``pad`` extra
    bytes of filler the format allows, e.g. JSON whitespace); ``tiny(size)`` when even head
    and tail do not fit."""

    name: str
    record: Any  # (random.Random) -> bytes
    head: Any  # (seed) -> bytes
    tail: Any  # (seed, pad) -> bytes
    tiny: Any  # (size) -> bytes


# fmt: off
_WORDS = (
    "blue", "night", "river", "echo", "golden", "paper", "summer", "ghost", "light", "city",
    "fire", "heart", "dream", "velvet", "ocean", "electric", "silent", "wild", "neon", "moon",
)
# fmt: on
_ARTISTS = [
    *("The Lanterns", "Mira Sol", "Northbound", "Kofi & the Tides", "Ada Quartet", "Low Orbit"),
    *("Sable", "Juniper Hall", "Ostra", "The Paper Kites Club", "Nadia Brel", "Tin Roof Choir"),
]
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _title(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).title()


def _spotify_id(rng: random.Random) -> str:
    return "".join(rng.choice(_B62) for _ in range(22))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def _play(rng: random.Random) -> dict[str, Any]:
    """One play of a Spotify "recently played" history (a trimmed ``PlayHistoryObject``)."""
    duration = rng.randint(95_000, 420_000)
    day, sec = rng.randint(1, 28), rng.randrange(86_400)
    return {
        "played_at": f"2022-11-{day:02d}T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}"
        f".{rng.randrange(1000):03d}Z",
        "ms_played": rng.randint(20_000, duration),
        "track": {
            "id": _spotify_id(rng),
            "name": _title(rng, rng.randint(1, 4)),
            "artists": [{"name": rng.choice(_ARTISTS)}],
            "album": {"name": _title(rng, rng.randint(1, 3))},
            "duration_ms": duration,
        },
        "context": rng.choice([None, {"type": "playlist"}, {"type": "album"}]),
    }


def _track(rng: random.Random) -> dict[str, Any]:
    """One track's metadata with audio features (Spotify ``TrackObject`` + features)."""
    return {
        "id": _spotify_id(rng),
        "name": _title(rng, rng.randint(1, 4)),
        "artists": [{"name": rng.choice(_ARTISTS)}],
        "album": {
            "name": _title(rng, rng.randint(1, 3)),
            "release_date": str(rng.randint(1968, 2022)),
        },
        "duration_ms": rng.randint(95_000, 420_000),
        "popularity": rng.randint(0, 100),
        "explicit": rng.random() < 0.1,
        "audio_features": {
            "danceability": round(rng.random(), 3),
            "energy": round(rng.random(), 3),
            "tempo": round(rng.uniform(60, 190), 3),
            "valence": round(rng.random(), 3),
        },
    }


def _day(rng: random.Random) -> dict[str, Any]:
    """One day of activity data (as in the sample's fitbit-data.json)."""
    return {
        "date": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "steps": rng.randint(1500, 18000),
        "resting_heart_rate": rng.randint(52, 78),
        "sleep_minutes": rng.randint(300, 540),
    }


def _tiny_json(size: int) -> bytes:
    return b"" if size == 0 else b"0" if size == 1 else b"[" + b" " * (size - 2) + b"]"


def _json_format(name: str, make: Any) -> _Format:
    """A JSON list of records, one per line; whitespace before the closing ``]`` pads it."""
    return _Format(
        name,
        record=lambda rng: _dumps(make(rng)) + b",\n",
        head=lambda seed: b"[\n" + _dumps(make(random.Random(seed))) + b",\n",
        tail=lambda seed, pad: _dumps(make(random.Random(f"{seed}:last"))) + b" " * pad + b"\n]\n",
        tiny=_tiny_json,
    )


_CSV_HEADER = b"date,steps,resting_heart_rate,sleep_minutes\n"


def _csv_row(rng: random.Random, pad: int = 0) -> bytes:
    d = _day(rng)
    sleep = d["sleep_minutes"]
    sleep_text = f"{sleep:0{len(str(sleep)) + pad}d}"  # zero-padding the last field pads the file
    return f"{d['date']},{d['steps']},{d['resting_heart_rate']},{sleep_text}\n".encode()


def _tiny_csv(size: int) -> bytes:
    if size <= 1:
        return b"d"[:size]
    return (b"date" + b"_" * size)[: size - 1] + b"\n"  # a header row alone


def _fastq_record(rng: random.Random, name: str | None = None) -> bytes:
    seq = rng.randbytes(100).translate(_ACGT)
    qual = rng.randbytes(100).translate(_QUAL)
    name = name or f"R{rng.randrange(10**7):07d}"
    return b"@%s 1:N:0:1\n%s\n+\n%s\n" % (name.encode(), seq, qual)


def _log_line(rng: random.Random) -> bytes:
    day, sec = rng.randint(1, 28), rng.randrange(86_400)
    return (
        f"2024-02-{day:02d}T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}Z\t"
        f"{rng.choice(_WORDS)}\t{rng.randint(0, 99_999)}\n"
    ).encode()


_FORMATS: dict[str, _Format] = {
    f.name: f
    for f in (
        _json_format("plays", _play),
        _json_format("tracks", _track),
        _json_format("days", _day),
        _Format(
            "csv",
            record=_csv_row,
            head=lambda seed: _CSV_HEADER + _csv_row(random.Random(seed)),
            tail=lambda seed, pad: _csv_row(random.Random(f"{seed}:last"), pad),
            tiny=_tiny_csv,
        ),
        # the two below only ever come gzipped (a plain .fastq or .txt stays opaque bytes)
        _Format(
            "fastq",
            record=_fastq_record,
            head=lambda seed: _fastq_record(random.Random(seed), f"S{seed}"),
            tail=lambda seed, pad: _fastq_record(random.Random(f"{seed}:last")),
            tiny=lambda size: b"",
        ),
        _Format(
            "text",
            record=_log_line,
            head=lambda seed: f"# ohserver text seed={seed}\n".encode(),
            tail=lambda seed, pad: b"# end\n",
            tiny=lambda size: b"",
        ),
    )
}


def _format_of(name: str) -> _Format | None:
    """The text format a basename calls for (``.json``, ``.csv``), or None."""
    low = name.lower()
    if low.endswith(".json"):
        if "listening" in low or "history" in low:
            return _FORMATS["plays"]
        if "track" in low or "metadata" in low:
            return _FORMATS["tracks"]
        return _FORMATS["days"]
    if low.endswith(".csv"):
        return _FORMATS["csv"]
    return None


_CYCLE_BYTES = 256 * 1024  # text in one format's record cycle
_UNIT_BYTES = 4096  # text per independently compressed gzip unit


@cache
def _records(fmt: str) -> _Cycle:
    """The shared record cycle of a format (deterministic: seeded by the format's name)."""
    rng = random.Random(f"ohserver {fmt} records")
    record = _FORMATS[fmt].record
    pieces, total = [], 0
    while total < _CYCLE_BYTES:
        pieces.append(record(rng))
        total += len(pieces[-1])
    return _Cycle(pieces)


def _deflate(text: bytes, final: bool = False) -> bytes:
    """Raw deflate of ``text`` by a fresh compressor, ending byte-aligned (sync flush) or with
    the final block: such pieces concatenate into one valid deflate stream."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(text) + c.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)


@cache
def _gzip_units(fmt: str) -> tuple[_Cycle, _Cycle]:
    """The record cycle of ``fmt`` in units of about 4 KiB: (compressed units, their texts)."""
    records = _records(fmt)
    texts, unit = [], b""
    for i in range(records.count):
        unit += records.data[records.starts[i] : records.starts[i + 1]]
        if len(unit) >= _UNIT_BYTES or i == records.count - 1:
            texts.append(unit)
            unit = b""
    return _Cycle([_deflate(t) for t in texts]), _Cycle(texts)


class _FormatContent(_Composed):
    """Valid text of a format (JSON list, CSV with a header row) of exactly ``size`` bytes:
    its own first and last records (from ``seed``), whole records of the format's shared
    cycle from a seed-chosen record in between, and the format's filler to fill up."""

    def __init__(self, fmt: _Format, size: int, seed: int = 0) -> None:
        super().__init__(size)
        self.format = fmt
        self.seed = seed

    def _layout(self) -> list[bytes | _Run | _Deferred]:
        fmt, seed = self.format, self.seed
        head, tail = fmt.head(seed), fmt.tail(seed, 0)
        budget = self.size - len(head) - len(tail)
        if budget < 0:
            return [fmt.tiny(self.size)]
        cycle = _records(fmt.name)
        first = random.Random(seed).randrange(cycle.count)
        _, length = cycle.fit(first, budget)
        return [head, _Run(cycle, first, length), fmt.tail(seed, budget - length)]


class _GzipContent(_Composed):
    """A real gzip stream of exactly ``size`` bytes whose text is ``fmt`` (JSON, CSV, FASTQ or
    log lines): independently deflated units of the format's cycle between the file's own
    first and last records; the gzip header's comment field takes up the slack (< one unit).
    Below 21 bytes no gzip fits: the first ``size`` bytes of an empty one."""

    def __init__(self, fmt: _Format, size: int, seed: int = 0) -> None:
        super().__init__(size)
        self.format = fmt
        self.seed = seed

    def _layout(self) -> list[bytes | _Run | _Deferred]:
        fmt, seed = self.format, self.seed
        head_text, tail_text = fmt.head(seed), fmt.tail(seed, 0)
        head, tail = _deflate(head_text), _deflate(tail_text, final=True)
        fixed = 10 + 1 + 8  # header with an empty comment, trailer
        budget = self.size - fixed - len(head) - len(tail)
        if budget < 0:  # no room for the records: an empty (but valid) stream
            head_text = tail_text = head = b""
            tail = _deflate(b"", final=True)
            budget = self.size - fixed - len(tail)
        units, texts = _gzip_units(fmt.name)
        first = random.Random(seed).randrange(units.count)
        k, length = units.fit(first, budget)
        text_length = texts.span(first, k)

        def trailer() -> bytes:
            crc = zlib.crc32(head_text)
            for pos in range(0, text_length, 4 * CHUNK):
                crc = zlib.crc32(texts.read(first, pos, min(text_length, pos + 4 * CHUNK)), crc)
            crc = zlib.crc32(tail_text, crc)
            isize = len(head_text) + text_length + len(tail_text)
            return struct.pack("<II", crc, isize & 0xFFFFFFFF)

        slack = max(0, budget - length)
        comment = (b"ohserver " + b"." * slack)[:slack] + b"\x00"
        header = b"\x1f\x8b\x08\x10" + b"\x00\x00\x00\x00" + b"\x00\x03" + comment
        if budget < 0:  # fewer than 21 bytes: no gzip fits
            return [(header + tail + trailer())[: self.size]]
        return [header, head, _Run(units, first, length), tail, _Deferred(8, trailer)]


def named_content(basename: str, size: int, seed: int = 0) -> Content:
    """Deterministic content of exactly ``size`` bytes that matches ``basename``: a JSON list
    of records for ``.json`` (Spotify plays for ``*listening*``/``*history*``, track metadata
    for ``*track*``/``*metadata*``, daily activity otherwise), CSV with a header row for
    ``.csv``, a real gzip stream for ``.gz`` (of JSON/CSV/FASTQ/log text after the inner name),
    and opaque :class:`SyntheticContent` for anything else. Same arguments, same bytes."""
    low = basename.lower()
    if low.endswith(".gz"):
        stem = low[:-3]
        fmt = _format_of(stem)
        if fmt is None:
            fastq = stem.endswith((".fastq", ".fq"))
            fmt = _FORMATS["fastq" if fastq else "text"]
        return _GzipContent(fmt, size, seed)
    fmt = _format_of(low)
    if fmt is None:
        return SyntheticContent(size, seed)
    return _FormatContent(fmt, size, seed)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


@dataclass
class Project:
    """A DataRequestProject; JSON fields exactly as in samples 13/14."""

    id: int
    name: str
    slug: str = ""
    approved: bool = True
    no_public_data: bool = False  # "all public sharing disabled": files never listed
    active: bool = True
    badge_image: str | None = None
    contact_email: str = "projects@example.org"
    info_url: str = ""
    is_academic_or_nonprofit: bool = True
    is_study: bool = False
    leader: str = ""
    long_description: str = "-"
    organization: str = ""
    registered_datatypes: tuple[int, ...] = ()
    request_username_access: bool = False
    returned_data_description: str = ""
    short_description: str = ""
    type: str = "on-site"


@dataclass
class Datatype:
    """A DataType; ``children`` and ``source_projects`` are derived."""

    id: int
    name: str
    parent: int | None = None
    description: str = ""
    details: str = ""
    uploadable: bool = False


@dataclass
class Member:
    """A member: ``id`` (int, new API) and ``member_id`` (8-digit string, legacy API)."""

    username: str
    name: str
    id: int
    member_id: str
    active: bool = True


@dataclass
class _Membership:
    visible: bool = True  # False: hidden membership (null user, omitted per member)
    public: bool = True  # False: the member stopped public sharing for this project


@dataclass
class DataFile:
    """One stored data file. ``available=False`` is an upload that never completed."""

    id: int
    basename: str
    content: Content
    project_id: int
    username: str
    created: datetime
    datatype_ids: tuple[int, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    multipart: bool = False
    available: bool = True
    storage_uuid: str = ""

    @property
    def storage_key(self) -> str:
        """Object key inside the bucket (not URL-quoted)."""
        return f"member-files/direct-sharing-{self.project_id}/{self.storage_uuid}/{self.basename}"

    @property
    def size(self) -> int:
        return self.content.size


@dataclass
class LogEntry:
    """One request as the server saw it. ``headers`` keys are lower-case."""

    role: str  # "api" | "download" | "storage"
    method: str
    path: str  # raw path, without the query
    query: dict[str, str]  # last value wins
    headers: dict[str, str]
    status: int = 0
    bytes_sent: int = 0  # body bytes actually written
    start: float = 0.0
    end: float = 0.0
    connection: int = 0  # serial number of the TCP connection (keep-alive reuse shows here)
    listing: Listing | None = None  # file-listing requests only: what was asked and served


@dataclass
class Listing:
    """One file-listing request (``/api/public/datafiles/``, the project, member and datatype
    file lists, ``/api/public-data/``) as the server served it: ``LogEntry.listing``."""

    view: str  # "datafiles" | "project_datafiles" | "member_datafiles" | ... | "legacy"
    limit: int  # the page size in effect (missing, <= 0 or garbage: 100)
    offset: int
    count: int  # the envelope's "count"
    records: int  # records in the page: what the server serialized (and, with capacity, paid)
    outcome: str = "ok"
    """"ok"; "timeout": past :attr:`Capacity.timeout`, answered with the router's HTML 500
    (a worker timeout); "fault": ``faults.listing`` "500" or "html" answered instead."""
    service: float = 0.0  # modelled CPU seconds the request received (0 without capacity)


@dataclass
class ListingStats:
    """Counters over the file-listing requests in the log (:meth:`OHServer.listing_stats`)."""

    requests: int = 0
    timeouts: int = 0  # worker timeouts (router HTML 500s)
    records_served: int = 0  # records in pages answered 200
    records_timed_out: int = 0  # records in the pages of requests that timed out
    repeated_timeouts: int = 0
    """Requests (any outcome) for the same path, ``limit`` and ``offset`` as a request that had
    timed out before they started: a heavy request re-sent unchanged."""


@dataclass
class Capacity:
    """The real server's capacity, for the file listings: each listed record costs CPU, the
    gunicorn workers share ``cores``, and a request still running at ``timeout`` is killed
    (HTTP 500 with the router's HTML page). Reference section 6 on a 2-core machine: about
    8 ms per record (13-16 ms under other load) behind a 30 s limit, i.e. about 3,750
    records per request alone (about 2,000 under load), fewer when requests run in parallel.
    The defaults keep those ratios at 1/20 of real time.

    Processor sharing: a request needs ``per_request + records * per_record`` seconds of CPU;
    while ``k`` requests are in it, each progresses at ``min(1, cores / k)``. The time limit
    runs from the start of the view (after ``faults.latency``). Only file listings are
    charged (details, downloads and storage are free and do not slow the listings)."""

    per_record: float = 0.0004
    """CPU seconds per listed record (real: 0.008; 0.013-0.016 under load)."""
    cores: int = 2
    """Cores the workers share."""
    timeout: float = 1.5
    """Router/worker timeout in seconds (real: 30)."""
    per_request: float = 0.0
    """CPU seconds per listing request on top of its records."""

    @classmethod
    def scaled(cls, scale: float, per_record: float = 0.008, cores: int = 2) -> Capacity:
        """The real figures (``per_record`` real seconds, a 30 s limit) times ``scale``."""
        return cls(per_record=per_record * scale, cores=cores, timeout=30.0 * scale)

    def cost(self, records: int) -> float:
        """CPU seconds a page of ``records`` records needs."""
        return self.per_request + records * self.per_record

    def records_alone(self) -> int | None:
        """The most records one request can list in time with the cores to itself (None:
        any number)."""
        if self.per_record <= 0:
            return None if self.per_request < self.timeout else 0
        return max(0, math.ceil((self.timeout - self.per_request) / self.per_record) - 1)


class _Processors:
    """Cores shared by the requests in flight (processor sharing, with real sleeping).

    ``_work`` is the running total of service that any one job in flight receives: it grows at
    ``min(1, cores / jobs)`` per second, brought up to date under the lock at every arrival,
    departure and look. A job is done once ``_work`` has grown by its cost since it arrived;
    it sleeps in steps of at most ``STEP`` so that a departure speeds the others up soon."""

    STEP = 0.01  # longest sleep between looks (a departure speeds the others up)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs = 0
        self._work = 0.0
        self._stamp = time.monotonic()
        self.peak = 0  # most jobs in flight at once

    def _advance(self, cores: int) -> float:
        now = time.monotonic()
        if self._jobs:
            self._work += (now - self._stamp) * min(1.0, cores / self._jobs)
        self._stamp = now
        return now

    @property
    def jobs(self) -> int:
        with self._lock:
            return self._jobs

    def run(self, cost: float, deadline: float, cores: int, stopping: threading.Event) -> float:
        """Serve ``cost`` CPU seconds before the monotonic ``deadline``; return the service
        received (``cost`` when done, less when the deadline came first)."""
        with self._lock:
            self._advance(cores)
            self._jobs += 1
            self.peak = max(self.peak, self._jobs)
            start = self._work
        try:
            while True:
                with self._lock:
                    now = self._advance(cores)
                    got = self._work - start
                    rate = min(1.0, cores / self._jobs)
                if got >= cost - 1e-9:
                    return cost
                if now >= deadline:
                    return got
                wait = min((cost - got) / rate, deadline - now, self.STEP)
                if stopping.wait(max(wait, 0.0005)):
                    raise ConnectionAbortedError("server stopping")
        finally:
            with self._lock:
                self._advance(cores)
                self._jobs -= 1


@dataclass
class _Script:
    role: str
    pattern: re.Pattern[str] | None
    statuses: list[int]
    retry_after: float | int | str | None


LISTING_MODES = (None, "html", "truncated_json", "loop_next", "huge_page", "500")


@dataclass
class Faults:
    """Fault switches; all off by default. Safe to change while requests run."""

    latency: dict[str, float] = field(default_factory=dict)
    """Seconds to wait before answering, per role ("api", "download", "storage")."""

    bandwidth: int | None = None
    """Cap in bytes/s for each storage response body (paced per connection)."""

    reset_after: dict[int, tuple[int, int]] = field(default_factory=dict)
    """file id -> (nbytes, times): storage sends headers and ``nbytes`` of the body, then resets
    the TCP connection (SO_LINGER 0 + close), for the next ``times`` GETs of that file."""

    truncate_after: dict[int, tuple[int, int]] = field(default_factory=dict)
    """file id -> (nbytes, times): full Content-Length promised, ``nbytes`` sent, clean close."""

    stall: dict[int, tuple[int, float, int]] = field(default_factory=dict)
    """file id -> (nbytes, seconds, times): send ``nbytes``, sleep ``seconds``, then the rest."""

    ignore_range: bool = False
    """Storage answers 200 with the full body even when Range is sent."""

    corrupt: set[int] = field(default_factory=set)
    """File ids whose served body has one byte flipped (offset size // 2); ETag stays true."""

    listing_mode: str | None = None
    """Fault for the paginated JSON list endpoints: None, "html" (200 text/html), "truncated_json"
    (body cut in half, Content-Length of the cut body), "loop_next" (``next`` is the same page),
    "huge_page" (a valid page padded past 50 MB), "500" (HTML 500)."""

    listing_times: int | None = None
    """How many listing requests ``listing_mode`` applies to (None: until switched off)."""

    listing_path_regex: str | None = None
    """Only listing requests whose path+query matches (re.search) get ``listing_mode``."""

    empty_items: int = 0
    """Extra ``{}`` items inserted at random places in each datafiles page when the request has
    ``?username=`` (on top of the real quirk, which blanks hidden-membership files of members
    whose username is a substring of the parameter)."""

    redirect_location: str | None = None
    """Fixed Location for the download view's 302 (e.g. ``file:///etc/passwd``, ``ftp://``)."""

    redirect_hops: int = 0
    """Extra 302 hops (via ``/redirect/<n>`` on the site) before the real storage URL."""

    _scripts: list[_Script] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def script(
        self,
        role: str,
        path_regex: str | None = None,
        statuses: Iterable[int] = (503, 502),
        retry_after: float | int | str | None = None,
    ) -> None:
        """The next requests of ``role`` whose path+query matches ``path_regex`` (re.search)
        answer ``statuses`` in order (5xx with an HTML body, or S3 XML on storage; 429 with
        ``Retry-After`` when given), then behaviour is normal again. Scripts queue up."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        pattern = re.compile(path_regex) if path_regex else None
        with self._lock:
            self._scripts.append(_Script(role, pattern, list(statuses), retry_after))

    def listing(
        self, mode: str | None, times: int | None = None, path_regex: str | None = None
    ) -> None:
        """Set ``listing_mode`` (optionally for ``times`` requests matching ``path_regex``)."""
        if mode not in LISTING_MODES:
            raise ValueError(f"listing mode must be one of {LISTING_MODES}")
        with self._lock:
            self.listing_mode, self.listing_times = mode, times
            self.listing_path_regex = path_regex

    def clear(self) -> None:
        """Switch every fault off."""
        with self._lock:
            self.latency.clear()
            self.bandwidth = None
            self.reset_after.clear()
            self.truncate_after.clear()
            self.stall.clear()
            self.ignore_range = False
            self.corrupt.clear()
            self.listing_mode = self.listing_times = self.listing_path_regex = None
            self.empty_items = 0
            self.redirect_location = None
            self.redirect_hops = 0
            self._scripts.clear()

    # -- used by the server ------------------------------------------------------------------

    def _take_script(self, role: str, target: str) -> tuple[int, Any] | None:
        with self._lock:
            for s in self._scripts:
                if s.role == role and (s.pattern is None or s.pattern.search(target)):
                    status = s.statuses.pop(0)
                    if not s.statuses:
                        self._scripts.remove(s)
                    return status, s.retry_after
        return None

    def _take_listing(self, target: str) -> str | None:
        with self._lock:
            mode = self.listing_mode
            if mode is None:
                return None
            if self.listing_path_regex and not re.search(self.listing_path_regex, target):
                return None
            if self.listing_times is not None:
                self.listing_times -= 1
                if self.listing_times <= 0:
                    self.listing_mode = self.listing_times = None
            return mode

    def _take_cut(self, file_id: int) -> _Cut | None:
        with self._lock:
            for kind, table in (
                ("reset", self.reset_after),
                ("truncate", self.truncate_after),
                ("stall", self.stall),
            ):
                spec = table.get(file_id)
                if spec is None:
                    continue
                times = spec[-1]
                if times <= 1:
                    del table[file_id]
                else:
                    table[file_id] = (*spec[:-1], times - 1)
                if times >= 1:
                    seconds = float(spec[1]) if kind == "stall" else 0.0
                    return _Cut(kind, int(spec[0]), seconds)
        return None


@dataclass
class _Cut:
    kind: str  # "reset" | "truncate" | "stall"
    nbytes: int
    seconds: float = 0.0


@dataclass
class _Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes | Iterable[bytes] = b""
    length: int | None = None  # Content-Length; len(body) when body is bytes
    cut: _Cut | None = None


@dataclass
class _Request:
    method: str
    target: str  # raw path + query as sent
    raw_path: str
    path: str  # percent-decoded
    query_string: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    listing: Listing | None = None  # set by the file-listing views

    def q(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _iso(value: datetime) -> str:
    text = value.astimezone(timezone.utc).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _parse_iso(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _json_bytes(obj: Any) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def _collation_key(username: str) -> tuple[str, str, str]:
    # Postgres en_US collation: letters and digits first, case-insensitive, punctuation ignored
    # (the real 176 listing puts "mw_pw" before "MxRemy" and "tuuli" before "Whoisdsmith").
    low = username.lower()
    return (re.sub(r"[^0-9a-z]", "", low), low, username)


def _replace_query(url: str, key: str, value: int | None) -> str:
    """DRF's replace_query_param / remove_query_param (keys end up sorted)."""
    scheme, netloc, path, query, fragment = urlsplit(url)
    qd = parse_qs(query, keep_blank_values=True)
    if value is None:
        qd.pop(key, None)
    else:
        qd[key] = [str(value)]
    return urlunsplit((scheme, netloc, path, urlencode(sorted(qd.items()), doseq=True), fragment))


def _positive_int(text: str | None, strict: bool) -> int:
    if text is None:
        raise ValueError("missing")
    value = int(text)
    if value < 0 or (strict and value == 0):
        raise ValueError("not positive")
    return value


def _strtobool(text: str) -> bool:
    low = text.lower()
    if low in ("y", "yes", "t", "true", "on", "1"):
        return True
    if low in ("n", "no", "f", "false", "off", "0"):
        return False
    raise ValueError(f"invalid truth value {text!r}")


def _html(status: int, body: bytes, content_type: str = "text/html; charset=utf-8") -> _Reply:
    return _Reply(status, [("Content-Type", content_type), ("X-Frame-Options", "DENY")], body)


_API_HEADERS = [
    ("Content-Type", "application/json"),
    ("Vary", "Accept, Authorization, Cookie, origin"),
    ("Allow", "GET, HEAD, OPTIONS"),
    ("Cache-Control", "max-age=0, no-cache, no-store, must-revalidate, private"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
]


def _api_json(obj: Any, status: int = 200) -> _Reply:
    return _Reply(status, [*_API_HEADERS, ("Expires", formatdate(usegmt=True))], _json_bytes(obj))


SERVER_ERROR_HTML = b"<h1>Server Error (500)</h1>"  # Django's, from the app itself
NOT_FOUND_HTML = b"<h1>Not Found</h1><p>The requested resource was not found on this server.</p>"
UNAVAILABLE_HTML = b"<h1>This file is unavailable.</h1>"
NOT_AUTHORIZED_HTML = b"<h1>You are not authorized to view this file.</h1>"
CRAWLER_HTML = b"<h1>403 Forbidden</h1>"


def _server_error() -> _Reply:
    return _Reply(
        500, [("Content-Type", "text/html"), ("X-Frame-Options", "DENY")], SERVER_ERROR_HTML
    )


def _s3_error(status: int, code: str, message: str, **extra: Any) -> _Reply:
    fields = "".join(f"<{k}>{v}</{k}>" for k, v in extra.items())
    body = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{fields}"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId>"
        "<HostId>b2hzZXJ2ZXIgbG9jYWwgdGVzdCBob3N0</HostId></Error>"
    ).encode()
    return _Reply(status, [("Content-Type", "application/xml")], body)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _status_page(status: int) -> bytes:
    phrase = _phrase(status)
    return (
        f"<!DOCTYPE html><html><head><title>{status} {phrase}</title></head>"
        f"<body><h1>{status} {phrase}</h1></body></html>"
    ).encode()


ROUTER_TIMEOUT_HTML = _status_page(500)  # the router's, when it gave up on a worker

_S3_CODES = {500: "InternalError", 503: "SlowDown", 429: "SlowDown", 403: "AccessDenied"}

_API_ROUTES: list[tuple[bool, re.Pattern[str], str]] = [
    # (search?, pattern, view) in the order of the real api/urls.py. ``re_path`` routes are
    # matched with re.search like Django does, so trailing text is allowed after them.
    (False, re.compile(r"public/datafiles/"), "datafiles"),
    (True, re.compile(r"public/datafile/(?P<pk>[0-9]+)/"), "datafile"),
    (False, re.compile(r"public/datatypes/"), "datatypes"),
    (True, re.compile(r"public/datatype/(?P<pk>[0-9]+)/datafiles/"), "datatype_datafiles"),
    (True, re.compile(r"public/datatype/(?P<pk>[0-9]+)/"), "datatype"),
    (False, re.compile(r"public/members/"), "members"),
    (True, re.compile(r"public/member/(?P<username>[A-Za-z_0-9]+)/datafiles/"), "member_datafiles"),
    (True, re.compile(r"public/member/(?P<username>[A-Za-z_0-9]+)/projects/"), "member_projects"),
    (True, re.compile(r"public/member/(?P<username>[A-Za-z_0-9]+)/"), "member"),
    (True, re.compile(r"public/project/(?P<pk>[0-9]+)/datafiles/"), "project_datafiles"),
    (True, re.compile(r"public/project/(?P<pk>[0-9]+)/members"), "project_members"),
    (True, re.compile(r"public/project/(?P<pk>[0-9]+)/"), "project"),
    (False, re.compile(r"public/projects/"), "projects"),
    (False, re.compile(r"public-data/"), "legacy"),
]
_DOWNLOAD_RE = re.compile(r"/data-management/datafile-download/(?P<pk>[0-9]+)/")
_REDIRECT_RE = re.compile(r"/redirect/(?P<n>[0-9]+)")
_FILE_LISTS = {"datafiles", "datatype_datafiles", "member_datafiles", "project_datafiles"}


class _ObjectMissing(Exception):
    """A list endpoint's path object does not exist (Django DoesNotExist): HTML 500."""


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


class OHServer:
    """State of a fake Open Humans plus its two listeners. All data methods are thread-safe."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        storage_port: int = 0,
        key_ttl: float = 3600.0,
        storage_url_ttl: int = 600,
        seed: int | None = 0,
        shuffle: bool = True,
        tls: bool = False,
    ) -> None:
        self.host = host
        self.tls = tls
        """Serve https:// on both listeners, with a certificate from a CA made at start
        (``trustme``); clients trust it through :attr:`ca_bundle`."""
        self._tls_dir: str | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._ports = (port, storage_port)
        self.key_ttl = key_ttl
        """Seconds a download key stays valid after minting."""
        self.storage_url_ttl = storage_url_ttl
        """Seconds a pre-signed storage URL stays valid (its ``Expires``)."""
        self.shuffle = shuffle
        """Randomize files within a member and ``datatypes`` order per request (real: True)."""
        self.same_ties = False
        """With ``shuffle``: order a member's files the same way for every request whose
        ``offset + limit`` is the same, as Postgres' top-N sort did on the real server
        (reference section 6: re-walking the same pages lost the same files every time)."""
        self.capacity: Capacity | None = None
        """The capacity model of the file listings (None: off, every page is free and
        immediate). Safe to set or change while requests run."""
        self._cpu = _Processors()
        self.faults = Faults()
        self.storage_missing: set[int] = set()
        """File ids whose storage object is gone: storage answers 404 NoSuchKey."""
        self.log: list[LogEntry] = []
        self.errors: list[str] = []
        """Tracebacks of unexpected exceptions inside the server (should stay empty)."""
        self.in_flight: dict[str, int] = dict.fromkeys(ROLES, 0)
        self.peak_in_flight: dict[str, int] = dict.fromkeys((*ROLES, "site"), 0)
        """Peak concurrent requests per role, and "site": api + download together (everything
        that lands on Open Humans itself rather than on storage)."""

        self._lock = threading.RLock()
        self._rng = random.Random(seed)  # per-request randomness (shuffles, keys)
        self._data_rng = random.Random(None if seed is None else seed + 1)  # ids, uuids
        self._offset = 0.0
        self._projects: dict[int, Project] = {}
        self._datatypes: dict[int, Datatype] = {}
        self._members: dict[str, Member] = {}
        self._memberships: dict[tuple[str, int], _Membership] = {}
        self._files: dict[int, DataFile] = {}
        self._objects: dict[str, int] = {}  # storage key -> file id
        self._deleted: set[int] = set()
        self._keys: dict[str, tuple[int, float]] = {}
        self._mints_since_prune = 0
        self._next_id = 1
        self._last_created = _EPOCH - timedelta(minutes=1)
        self._sorted: list[DataFile] | None = None
        self._conn_serial = 0

        self._listeners: list[_Listener] = []
        self._accept_thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._stopping = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> OHServer:
        """Bind both listeners (port 0: any free port) and start serving."""
        if self._listeners:
            raise RuntimeError("already started")
        self._stopping.clear()
        if self.tls and self._ssl_context is None:
            self._ssl_context = self._make_tls()
        site = _Listener((self.host, self._ports[0]), self, site=True)
        try:
            storage = _Listener((self.host, self._ports[1]), self, site=False)
        except OSError:
            site.server_close()
            raise
        self._listeners = [site, storage]
        self._wake = socket.socketpair()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="ohserver-accept", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listening sockets and every open connection; join all threads."""
        if not self._listeners:
            return
        self._stopping.set()
        assert self._wake is not None and self._accept_thread is not None
        self._wake[1].send(b"x")
        self._accept_thread.join(timeout)
        for listener in self._listeners:
            listener.server_close()
        threads: list[threading.Thread] = []
        for listener in self._listeners:
            with listener.lock:
                conns = list(listener.conns)
                threads.extend(listener.threads)
            for conn in conns:
                with contextlib.suppress(OSError):
                    # The plain socket's shutdown: SSLSocket.shutdown would drop its SSL
                    # object under the connection thread still reading from it.
                    socket.socket.shutdown(conn, socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for s in self._wake:
            s.close()
        self._listeners, self._wake, self._accept_thread = [], None, None
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir, self._ssl_context = None, None

    def _make_tls(self) -> ssl.SSLContext:
        """A fresh CA (its PEM in a temporary directory) and a server certificate for
        ``host``, ``127.0.0.1`` and ``localhost``."""
        import trustme  # only TLS servers need it (the ``test`` extra installs it)

        ca = trustme.CA(organization_name="ohserver local test CA")
        names = dict.fromkeys((self.host, "127.0.0.1", "localhost"))
        cert = ca.issue_cert(*names)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        self._tls_dir = tempfile.mkdtemp(prefix="ohserver-tls-")
        ca.cert_pem.write_to_path(str(Path(self._tls_dir) / "ca.pem"))
        return ctx

    @property
    def ca_bundle(self) -> str:
        """Path of the CA certificate (PEM) that signed the server's certificate, for
        ``REQUESTS_CA_BUNDLE``, ``curl --cacert`` or ``aria2c --ca-certificate``; valid
        while the server runs."""
        if self._tls_dir is None:
            raise RuntimeError("not a started TLS server (OHServer(tls=True))")
        return str(Path(self._tls_dir) / "ca.pem")

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def __enter__(self) -> OHServer:
        return self.start() if not self._listeners else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._wake is not None
        with selectors.DefaultSelector() as sel:
            for listener in self._listeners:
                sel.register(listener.socket, selectors.EVENT_READ, listener)
            sel.register(self._wake[0], selectors.EVENT_READ, None)
            while not self._stopping.is_set():
                for key, _ in sel.select():
                    listener = key.data
                    if listener is None or self._stopping.is_set():
                        return
                    try:
                        request, address = listener.get_request()
                    except OSError:
                        continue
                    listener.process_request(request, address)

    @property
    def base_url(self) -> str:
        """The site (API + download view), e.g. ``http://127.0.0.1:8000``; canonical host."""
        return f"{self.scheme}://{self.host}:{self._listeners[0].server_address[1]}"

    @property
    def storage_url(self) -> str:
        """The storage (S3-like) host."""
        return f"{self.scheme}://{self.host}:{self._listeners[1].server_address[1]}"

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/public/"

    def url(self, path: str) -> str:
        """Absolute site URL of ``path``."""
        return self.base_url + path

    # -- clock ----------------------------------------------------------------------------

    def now(self) -> float:
        """The server's notion of now (epoch seconds), ``time.time()`` plus ``advance``s."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the server clock forward (keys and storage URLs expire against it)."""
        with self._lock:
            self._offset += seconds

    # -- request log ----------------------------------------------------------------------

    def count(
        self, role: str | None = None, path_prefix: str | None = None, method: str | None = None
    ) -> int:
        """Number of logged requests matching all the given criteria."""
        return sum(
            1
            for e in list(self.log)
            if (role is None or e.role == role)
            and (path_prefix is None or e.path.startswith(path_prefix))
            and (method is None or e.method == method)
        )

    def listings(self, path_prefix: str | None = None) -> list[LogEntry]:
        """Logged file-listing requests (those with ``entry.listing``), in order of start."""
        entries = [
            e
            for e in list(self.log)
            if e.listing is not None and (path_prefix is None or e.path.startswith(path_prefix))
        ]
        return sorted(entries, key=lambda e: e.start)

    def listing_stats(self, path_prefix: str | None = None) -> ListingStats:
        """Counters over :meth:`listings`: requests, worker timeouts, records served, records
        of the requests that timed out, and timed-out requests re-sent unchanged."""
        stats = ListingStats()
        timed_out: list[tuple[float, tuple[str, int, int]]] = []
        for e in self.listings(path_prefix):
            info = e.listing
            assert info is not None
            key = (e.path, info.limit, info.offset)
            stats.requests += 1
            if any(k == key and end <= e.start for end, k in timed_out):
                stats.repeated_timeouts += 1
            if info.outcome == "timeout":
                stats.timeouts += 1
                stats.records_timed_out += info.records
                timed_out.append((e.end, key))
            elif info.outcome == "ok" and e.status == 200:
                stats.records_served += info.records
        return stats

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    def max_in_flight_reset(self) -> None:
        """Reset ``peak_in_flight`` to the current in-flight numbers."""
        with self._lock:
            self.peak_in_flight.update(self.in_flight)
            self.peak_in_flight["site"] = self.in_flight["api"] + self.in_flight["download"]

    # -- data manipulation ----------------------------------------------------------------

    def _touch(self) -> None:
        self._sorted = None

    def add_project(self, id: int, name: str, **fields: Any) -> Project:
        """Add (or replace) a project; ``fields`` are :class:`Project` attributes."""
        fields.setdefault("slug", re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
        if "registered_datatypes" in fields:
            fields["registered_datatypes"] = tuple(fields["registered_datatypes"])
        project = Project(id=id, name=name, **fields)
        with self._lock:
            self._projects[id] = project
            self._touch()
        return project

    def add_datatype(
        self,
        id: int,
        name: str,
        parent: int | None = None,
        *,
        description: str = "",
        details: str = "",
        uploadable: bool = False,
    ) -> Datatype:
        dt = Datatype(
            id, name, parent, description or name, details or description or name, uploadable
        )
        with self._lock:
            self._datatypes[id] = dt
        return dt

    def add_member(
        self, username: str, name: str, *, id: int | None = None, member_id: str | None = None
    ) -> Member:
        if not re.fullmatch(r"[A-Za-z_0-9]+", username):
            raise ValueError(f"invalid username {username!r}")
        with self._lock:
            if id is None:
                id = max((m.id for m in self._members.values()), default=0) + 1
            if member_id is None:
                taken = {m.member_id for m in self._members.values()}
                member_id = f"{self._data_rng.randrange(10**8):08d}"
                while member_id in taken:
                    member_id = f"{self._data_rng.randrange(10**8):08d}"
            member = Member(username, name, id, member_id)
            self._members[username] = member
            self._touch()
        return member

    def join(self, username: str, project_id: int, visible: bool = True) -> None:
        """Make ``username`` an authorized member of ``project_id`` (no files needed)."""
        with self._lock:
            self._need(username, project_id)
            ms = self._memberships.setdefault((username, project_id), _Membership())
            ms.visible = visible
            self._touch()

    def _need(self, username: str, project_id: int) -> None:
        if username not in self._members:
            raise KeyError(f"no member {username!r}")
        if project_id not in self._projects:
            raise KeyError(f"no project {project_id}")

    def add_file(
        self,
        *,
        id: int | None = None,
        basename: str,
        content: bytes | Content,
        project_id: int,
        username: str,
        created: datetime | str | None = None,
        datatype_ids: Iterable[int] = (),
        metadata: dict[str, Any] | None = None,
        multipart: bool = False,
        available: bool = True,
    ) -> int:
        """Store a file and return its id. ``created`` defaults to one minute after the newest
        file. The member joins the project (visible) if not yet a member."""
        if username is None:
            raise ValueError("username is required; use hide_membership() for a null user")
        body = _as_content(content)
        with self._lock:
            self._need(username, project_id)
            if id is None:
                id = self._next_id
            if id in self._files or id in self._deleted:
                raise ValueError(f"file id {id} already used")
            if created is None:
                created = self._last_created + timedelta(minutes=1)
            elif isinstance(created, str):
                created = _parse_iso(created)
            self._last_created = max(self._last_created, created)
            self._next_id = max(self._next_id, id + 1)
            f = DataFile(
                id=id,
                basename=basename,
                content=body,
                project_id=project_id,
                username=username,
                created=created,
                datatype_ids=tuple(datatype_ids),
                metadata=copy.deepcopy(metadata) if metadata is not None else {},
                multipart=multipart,
                available=available,
                storage_uuid=str(uuid.UUID(int=self._data_rng.getrandbits(128), version=1)),
            )
            self._files[id] = f
            self._objects[f.storage_key] = id
            self._memberships.setdefault((username, project_id), _Membership())
            self._touch()
        return id

    def delete_file(self, file_id: int) -> None:
        """Delete a file: gone from listings, download view "unavailable", storage 404."""
        with self._lock:
            f = self._files.pop(file_id)
            self._objects.pop(f.storage_key, None)
            self._deleted.add(file_id)
            self._touch()

    def replace_file(self, old_id: int, content: bytes | Content) -> int:
        """Upload a new version: new id, same basename/project/member, newer ``created``;
        the old id is deleted. Returns the new id."""
        with self._lock:
            old = self._files[old_id]
            new_id = self.add_file(
                basename=old.basename,
                content=content,
                project_id=old.project_id,
                username=old.username,
                created=max(self._last_created, old.created) + timedelta(minutes=1),
                datatype_ids=old.datatype_ids,
                metadata=old.metadata,
            )
            self.delete_file(old_id)
        return new_id

    def set_available(self, file_id: int, available: bool) -> None:
        """Mark a file complete/incomplete (incomplete: unlisted, download "unavailable")."""
        with self._lock:
            self._files[file_id].available = available
            self._touch()

    def hide_membership(self, username: str, project_id: int) -> None:
        """Files of that project serialize with a null user; omitted from /member/ lists."""
        with self._lock:
            self._memberships[(username, project_id)].visible = False
            self._touch()

    def unhide_membership(self, username: str, project_id: int) -> None:
        with self._lock:
            self._memberships[(username, project_id)].visible = True
            self._touch()

    def stop_sharing(self, username: str, project_id: int | None = None) -> None:
        """The member turns public sharing off (for one project or all): the files vanish from
        every listing and detail. As in the real download view, an already minted key still
        redirects (the file exists); no new key can be obtained."""
        self._set_sharing(username, project_id, False)

    def start_sharing(self, username: str, project_id: int | None = None) -> None:
        """Sharing back on: the same ids reappear with their old ``created``."""
        self._set_sharing(username, project_id, True)

    def _set_sharing(self, username: str, project_id: int | None, public: bool) -> None:
        with self._lock:
            if username not in self._members:
                raise KeyError(f"no member {username!r}")
            for (user, pid), ms in self._memberships.items():
                if user == username and (project_id is None or pid == project_id):
                    ms.public = public
            self._touch()

    # -- inspection -----------------------------------------------------------------------

    def file(self, file_id: int) -> DataFile:
        """The stored file (KeyError when deleted or unknown)."""
        with self._lock:
            return self._files[file_id]

    def file_ids(self, public_only: bool = False) -> list[int]:
        """Ids of stored files (``public_only``: those ``/api/public/datafiles/`` lists)."""
        with self._lock:
            if public_only:
                return sorted(f.id for f in self._listable())
            return sorted(self._files)

    def content(self, file_id: int) -> bytes:
        """The stored bytes of a file (careful with huge synthetic files)."""
        return self.file(file_id).content.read()

    def md5(self, file_id: int) -> str:
        return self.file(file_id).content.md5_hex()

    def etag(self, file_id: int) -> str:
        """The storage ETag, quotes included."""
        return _etag_of(self.file(file_id))

    def precompute_etags(self) -> None:
        """Hash every file now (otherwise the first storage GET of a big file pays for it)."""
        with self._lock:
            files = list(self._files.values())
        for f in files:
            _etag_of(f)

    def mint_key(self, file_id: int) -> str:
        """A fresh download key, as if the file had just been listed."""
        with self._lock:
            return self._mint(file_id)

    def download_url(self, file_id: int) -> str:
        """The file's download_url with a fresh key."""
        return f"{self.base_url}/data-management/datafile-download/{file_id}/?key=" + (
            self.mint_key(file_id)
        )

    def signed_url(self, file_id: int, expires: int | None = None, key: str = "") -> str:
        """The pre-signed storage URL the download view would redirect to."""
        with self._lock:
            f = self._files[file_id]
        if expires is None:
            expires = int(self.now()) + self.storage_url_ttl
        path = f"/{BUCKET}/member-files/direct-sharing-{f.project_id}/{f.storage_uuid}/"
        path += quote(f.basename, safe="~")
        query = urlencode(
            [
                ("AWSAccessKeyId", ACCESS_KEY_ID),
                ("Signature", _sign("GET", unquote(path), expires)),
                ("Expires", str(expires)),
                ("x-oh-key", key),
            ]
        )
        return f"{self.storage_url}{path}?{query}"

    # -- data sets ------------------------------------------------------------------------

    def load_sample(self) -> OHServer:
        """The data of the real-server transcripts (samples/real-server/*.txt)."""
        _load_sample(self)
        return self

    def load_project176(self) -> OHServer:
        """The real listing of project 176 (Spotify): 31 files of 10 members. The bytes are
        made up but match the names: JSON lists of plays or of track metadata, 3-100 KB,
        deterministic per file id (:func:`named_content`)."""
        _load_project176(self)
        return self

    def generate(
        self,
        n_files: int,
        n_members: int,
        min_size: int = 1_000,
        max_size: int = 100_000,
        *,
        project_id: int = 300,
        datatype_id: int = 30,
        seed: int = 0,
        hidden_fraction: float = 0.0,
    ) -> list[int]:
        """Add ``n_files`` synthetic files spread over ``n_members`` new members (``m00001``...)
        in ``project_id`` (created when missing); sizes log-uniform in [min_size, max_size];
        basenames repeat within a member; the bytes match the name (:func:`named_content`:
        ``data.json`` a JSON list, ``export.csv`` CSV with a header row, the others opaque).
        Returns the new ids."""
        return _generate(
            self,
            n_files,
            n_members,
            min_size,
            max_size,
            project_id,
            datatype_id,
            seed,
            hidden_fraction,
        )

    # -- keys -----------------------------------------------------------------------------

    def _mint(self, file_id: int) -> str:
        key = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        now = self.now()
        self._keys[key] = (file_id, now)
        self._mints_since_prune += 1
        if self._mints_since_prune > 200_000:  # keep memory bounded in long benchmarks
            self._mints_since_prune = 0
            limit = now - self.key_ttl
            self._keys = {k: v for k, v in self._keys.items() if v[1] >= limit}
        return key

    def _key_valid(self, key: str | None, file_id: int) -> bool:
        with self._lock:
            entry = self._keys.get(key or "")
        return entry is not None and entry[0] == file_id and self.now() - entry[1] <= self.key_ttl

    # -- queries --------------------------------------------------------------------------

    def _public(self, f: DataFile) -> bool:
        ms = self._memberships.get((f.username, f.project_id))
        member = self._members.get(f.username)
        return bool(f.available and ms and ms.public and member and member.active)

    def _listable(self) -> list[DataFile]:
        """ProjectDataFile.objects.public().exclude(no_public_data), ordered by username."""
        if self._sorted is None:
            files = [
                f
                for f in self._files.values()
                if self._public(f) and not self._projects[f.project_id].no_public_data
            ]
            files.sort(key=lambda f: (_collation_key(f.username), f.id))
            self._sorted = files
        return self._sorted

    def _files_for(self, view: str, kw: dict[str, str], req: _Request) -> list[DataFile]:
        files = self._listable()
        if view in ("datafiles", "legacy"):
            return files
        if view == "project_datafiles":
            project = self._projects.get(int(kw["pk"]))
            if project is None or not project.approved:
                raise _ObjectMissing
            return [f for f in files if f.project_id == project.id]
        if view == "member_datafiles":
            member = self._members.get(kw["username"])
            if member is None or not member.active:
                raise _ObjectMissing
            return [
                f
                for f in files
                if f.username == member.username
                and self._memberships[(f.username, f.project_id)].visible
                and self._projects[f.project_id].approved
            ]
        # datatype_datafiles: one row per matching (file, datatype) pair, like the SQL join
        dt = self._datatypes.get(int(kw["pk"]))
        if dt is None:
            raise _ObjectMissing
        wanted = {dt.id}
        try:
            include_children = _strtobool(req.q("include_children") or "False")
        except ValueError:
            raise _ObjectMissing from None  # strtobool's ValueError: a 500 as well
        if include_children:
            wanted |= self._descendants(dt.id)
        out: list[DataFile] = []
        for f in files:
            out.extend([f] * len(wanted.intersection(f.datatype_ids)))
        return out

    def _descendants(self, dt_id: int) -> set[int]:
        out: set[int] = set()
        for child in self._datatypes.values():
            if child.parent == dt_id and child.id not in out:
                out |= {child.id} | self._descendants(child.id)
        return out

    def _window(self, files: list[DataFile], offset: int, limit: int) -> list[DataFile]:
        """files[offset:offset+limit] after shuffling each member's files (only the members
        that touch the window need shuffling)."""
        if offset >= len(files):
            return []
        end = min(offset + limit, len(files))
        if not self.shuffle:
            return files[offset:end]
        lo, hi = offset, end
        while lo > 0 and files[lo - 1].username == files[lo].username:
            lo -= 1
        while hi < len(files) and files[hi].username == files[hi - 1].username:
            hi += 1
        segment: list[DataFile] = []
        i = lo
        while i < hi:
            j = i
            while j < hi and files[j].username == files[i].username:
                j += 1
            group = files[i:j]
            rng = random.Random(f"{files[i].username}:{end}") if self.same_ties else self._rng
            rng.shuffle(group)
            segment.extend(group)
            i = j
        return segment[offset - lo : end - lo]

    # -- serializers ----------------------------------------------------------------------

    def _file_json(self, f: DataFile, username_param: str | None) -> dict[str, Any]:
        visible = self._memberships[(f.username, f.project_id)].visible
        # api/serializers.py: query_params.get("username", []) is a *string*: substring test
        if username_param is not None and f.username in username_param and not visible:
            return {}
        base = self.base_url
        dts = list(f.datatype_ids)
        if self.shuffle:
            self._rng.shuffle(dts)
        member = self._members[f.username]
        user: dict[str, Any] = {"id": None, "name": None, "username": None}
        if visible:
            user = {"id": member.id, "name": member.name, "username": member.username}
        return {
            "id": f.id,
            "basename": f.basename,
            "created": _iso(f.created),
            "datatypes": [f"{base}/api/public/datatype/{d}/" for d in dts],
            "download_url": f"{base}/data-management/datafile-download/{f.id}/?key="
            + self._mint(f.id),
            "metadata": f.metadata,
            "source_project": f"{base}/api/public/project/{f.project_id}/",
            "user": user,
        }

    def _legacy_json(self, f: DataFile, usernames: list[str]) -> dict[str, Any]:
        visible = self._memberships[(f.username, f.project_id)].visible
        if f.username in usernames and not visible:  # legacy: list membership, exact match
            return {}
        member = self._members[f.username]
        user: dict[str, Any] = {"id": None, "name": None, "username": None}
        if visible:
            user = {"id": member.member_id, "name": member.name, "username": member.username}
        return {
            "id": f.id,
            "basename": f.basename,
            "created": _iso(f.created),
            "download_url": f"{self.base_url}/data-management/datafile-download/{f.id}/?key="
            + self._mint(f.id),
            "metadata": f.metadata,
            "source": f"direct-sharing-{f.project_id}",
            "user": user,
        }

    def _project_json(self, p: Project) -> dict[str, Any]:
        members = sum(1 for (_, pid) in self._memberships if pid == p.id)
        return {
            "active": p.active,
            "approved": p.approved,
            "authorized_members": members,
            "badge_image": p.badge_image,
            "contact_email": p.contact_email,
            "id": p.id,
            "id_label": f"direct-sharing-{p.id}",
            "info_url": p.info_url,
            "is_academic_or_nonprofit": p.is_academic_or_nonprofit,
            "is_study": p.is_study,
            "leader": p.leader,
            "long_description": p.long_description,
            "name": p.name,
            "organization": p.organization,
            "registered_datatypes": [f"/api/public/datatype/{d}/" for d in p.registered_datatypes],
            "requested_sources": [],
            "request_sources_access": [],
            "request_username_access": p.request_username_access,
            "returned_data_description": p.returned_data_description,
            "short_description": p.short_description,
            "slug": p.slug,
            "type": p.type,
        }

    def _datatype_json(self, dt: Datatype) -> dict[str, Any]:
        return {
            "id": dt.id,
            "name": dt.name,
            "parent": dt.parent,
            "children": sorted(c.id for c in self._datatypes.values() if c.parent == dt.id),
            "description": dt.description,
            "details": dt.details,
            "uploadable": dt.uploadable,
            "source_projects": [
                f"/api/public/project/{p.id}/"
                for p in sorted(self._projects.values(), key=lambda p: p.id)
                if p.approved and dt.id in p.registered_datatypes
            ],
        }

    def _member_json(self, m: Member) -> dict[str, Any]:
        return {
            "name": m.name,
            "profile_url": f"{self.base_url}/member/{m.username}/",
            "username": m.username,
        }

    # -- request handling (called by the handler; returns a reply) ------------------------

    def _handle(self, role: str, req: _Request) -> _Reply:
        wait = self.faults.latency.get(role, 0.0)
        if wait > 0 and self._stopping.wait(wait):
            raise ConnectionAbortedError("server stopping")
        if role != "storage" and _CRAWLER_RE.search(req.headers.get("user-agent", "")):
            return _html(403, CRAWLER_HTML)
        scripted = self.faults._take_script(role, req.target)
        if scripted is not None:
            return _scripted_reply(role, *scripted)
        if role == "storage":
            return self._storage(req)
        if role == "download":
            return self._download(req)
        return self._api(req)

    def _api(self, req: _Request) -> _Reply:
        started = time.monotonic()
        if req.method not in ("GET", "HEAD"):
            return _api_json({"detail": f'Method "{req.method}" not allowed.'}, 405)
        view, kw = _resolve(req.path)
        if view is None:
            if not req.path.endswith("/") and _resolve(req.path + "/")[0] is not None:
                location = req.raw_path + "/" + ("?" + req.query_string if req.query_string else "")
                return _Reply(
                    301, [("Content-Type", "text/html; charset=utf-8"), ("Location", location)]
                )
            return _html(404, NOT_FOUND_HTML)
        try:
            with self._lock:
                reply = self._api_view(view, kw, req)
        except _ObjectMissing:
            return _server_error()
        capacity = self.capacity
        if capacity is not None and req.listing is not None and req.listing.outcome == "ok":
            return self._serve(capacity, req.listing, started, reply)
        return reply

    def _serve(self, capacity: Capacity, listing: Listing, started: float, reply: _Reply) -> _Reply:
        """Pay the page's CPU on the shared cores (outside the data lock): the computed reply
        when done in time, the router's HTML 500 at the time limit otherwise."""
        cost = capacity.cost(listing.records)
        deadline = started + capacity.timeout
        listing.service = self._cpu.run(cost, deadline, capacity.cores, self._stopping)
        if listing.service < cost:
            listing.outcome = "timeout"
            return _html(500, ROUTER_TIMEOUT_HTML)
        return reply

    def _api_view(self, view: str, kw: dict[str, str], req: _Request) -> _Reply:
        not_found = {"detail": "Not found."}
        if view == "datafile":
            f = self._files.get(int(kw["pk"]))
            if f is None or not self._public(f) or self._projects[f.project_id].no_public_data:
                return _api_json(not_found, 404)
            return _api_json(self._file_json(f, req.q("username")))
        if view == "project":
            p = self._projects.get(int(kw["pk"]))
            if p is None or not p.approved:
                return _api_json(not_found, 404)
            return _api_json(self._project_json(p))
        if view == "datatype":
            dt = self._datatypes.get(int(kw["pk"]))
            return _api_json(self._datatype_json(dt) if dt else not_found, 200 if dt else 404)
        if view == "member":
            m = self._members.get(kw["username"])
            if m is None or not m.active:
                return _api_json(not_found, 404)
            return _api_json(self._member_json(m))
        return self._list_view(view, kw, req)

    def _list_view(self, view: str, kw: dict[str, str], req: _Request) -> _Reply:
        if view in _FILE_LISTS or view == "legacy":
            items: list[Any] = self._files_for(view, kw, req)
        elif view == "projects":
            items = sorted(
                (p for p in self._projects.values() if p.approved),
                key=lambda p: (p.name.lower(), p.id),
            )
        elif view == "datatypes":
            items = sorted(self._datatypes.values(), key=lambda d: d.id)
        elif view == "members":
            items = self._sorted_members(m.username for m in self._members.values())
        elif view == "member_projects":
            member = self._members.get(kw["username"])
            if member is None:
                raise _ObjectMissing
            items = sorted(
                (
                    self._projects[pid]
                    for (user, pid), ms in self._memberships.items()
                    if user == member.username and ms.visible and self._projects[pid].approved
                ),
                key=lambda p: p.id,
            )
        else:  # project_members
            project = self._projects.get(int(kw["pk"]))
            if project is None or not project.approved:
                raise _ObjectMissing
            items = self._sorted_members(
                user
                for (user, pid), ms in self._memberships.items()
                if pid == project.id and ms.visible
            )

        limit = _get_limit(req)
        offset = _get_offset(req)
        count = len(items)
        files = view in _FILE_LISTS or view == "legacy"
        mode = self.faults._take_listing(req.target)
        if mode in ("500", "html") and files:
            req.listing = Listing(view, limit, offset, count, 0, outcome="fault")
        if mode == "500":
            return _server_error()
        if mode == "html":
            return _html(
                200,
                b"<!DOCTYPE html><html><head><title>Open Humans</title></head>"
                b"<body><h1>Down for maintenance</h1></body></html>",
            )

        page = [] if count == 0 or offset > count else items
        if files:
            page = self._window(page, offset, limit)
            req.listing = Listing(view, limit, offset, count, len(page))
            if view == "legacy":
                results = [self._legacy_json(f, req.query.get("username", [])) for f in page]
            else:
                results = [self._file_json(f, req.q("username")) for f in page]
                if self.faults.empty_items and req.q("username") is not None:
                    for _ in range(self.faults.empty_items):
                        results.insert(self._rng.randint(0, len(results)), {})
        else:
            page = page[offset : offset + limit]
            render = {
                "projects": self._project_json,
                "member_projects": self._project_json,
                "datatypes": self._datatype_json,
            }.get(view, self._member_json)
            results = [render(x) for x in page]

        host = req.headers.get("host") or urlsplit(self.base_url).netloc
        url = f"{self.scheme}://{host}{req.target}"
        nxt = None
        if offset + limit < count:
            nxt = _replace_query(_replace_query(url, "limit", limit), "offset", offset + limit)
        prev = None
        if offset > 0:
            prev = _replace_query(url, "limit", limit)
            prev = _replace_query(prev, "offset", None if offset - limit <= 0 else offset - limit)
        if mode == "loop_next":
            nxt = url
        envelope = {"count": count, "next": nxt, "previous": prev, "results": results}
        if mode == "truncated_json":
            body = _json_bytes(envelope)
            return _Reply(200, list(_API_HEADERS), body[: len(body) // 2])
        if mode == "huge_page":
            return _huge_page(envelope)
        return _api_json(envelope)

    def _sorted_members(self, usernames: Iterable[str]) -> list[Member]:
        members = {u: self._members[u] for u in usernames if self._members[u].active}
        return sorted(members.values(), key=lambda m: _collation_key(m.username))

    def _download(self, req: _Request) -> _Reply:
        redirect = _REDIRECT_RE.fullmatch(req.path)
        if redirect:
            return self._redirect_hop(int(redirect["n"]), req)
        m = _DOWNLOAD_RE.fullmatch(req.path)
        if m is None:
            if _DOWNLOAD_RE.fullmatch(req.path + "/"):
                location = req.raw_path + "/" + ("?" + req.query_string if req.query_string else "")
                return _Reply(
                    301, [("Content-Type", "text/html; charset=utf-8"), ("Location", location)]
                )
            return _html(404, NOT_FOUND_HTML)
        file_id = int(m["pk"])
        with self._lock:
            f = self._files.get(file_id)
            unavailable = f is None or not f.available
        if unavailable:
            return _html(403, UNAVAILABLE_HTML)
        key = req.q("key")
        if not self._key_valid(key, file_id):
            return _html(403, NOT_AUTHORIZED_HTML)
        location = self.signed_url(file_id, key=key or "")
        if self.faults.redirect_location is not None:
            location = self.faults.redirect_location
        elif self.faults.redirect_hops > 0:
            location = f"{self.base_url}/redirect/{self.faults.redirect_hops}?" + urlencode(
                {"to": location}
            )
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Location", location),
            ("X-Frame-Options", "DENY"),
            ("Vary", "Authorization, Cookie"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "same-origin"),
        ]
        return _Reply(302, headers)

    def _redirect_hop(self, n: int, req: _Request) -> _Reply:
        """``/redirect/<n>?to=URL``: n hops in all, the last one to URL."""
        target = req.q("to")
        if target is None:
            return _html(404, NOT_FOUND_HTML)
        location = (
            target if n <= 1 else f"{self.base_url}/redirect/{n - 1}?" + urlencode({"to": target})
        )
        return _Reply(302, [("Content-Type", "text/html; charset=utf-8"), ("Location", location)])

    def _storage(self, req: _Request) -> _Reply:
        if req.method not in ("GET", "HEAD"):
            return _s3_error(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
            )
        if not req.path.startswith(f"/{BUCKET}/"):
            return _s3_error(404, "NoSuchBucket", "The specified bucket does not exist")
        access, signature, expires = (req.q(k) for k in ("AWSAccessKeyId", "Signature", "Expires"))
        if not (access and signature and expires):
            return _s3_error(
                403,
                "AccessDenied",
                "Query-string authentication requires the "
                "Signature, Expires and AWSAccessKeyId parameters",
            )
        try:
            expires_at = int(expires)
        except ValueError:
            return _s3_error(403, "AccessDenied", "Invalid date (should be seconds since epoch)")
        expected = _sign(req.method, req.path, expires_at)
        if access != ACCESS_KEY_ID or not hmac.compare_digest(expected, signature):
            return _s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        if self.now() > expires_at:
            return _s3_error(
                403,
                "AccessDenied",
                "Request has expired",
                Expires=formatdate(expires_at, usegmt=True),
                ServerTime=formatdate(self.now(), usegmt=True),
            )
        with self._lock:
            file_id = self._objects.get(req.path[len(BUCKET) + 2 :])
            f = self._files.get(file_id) if file_id is not None else None
        if f is None or f.id in self.storage_missing:
            return _s3_error(
                404,
                "NoSuchKey",
                "The specified key does not exist.",
                Key=req.path[len(BUCKET) + 2 :],
            )
        return self._object_reply(f, req)

    def _object_reply(self, f: DataFile, req: _Request) -> _Reply:
        size = f.content.size
        etag = _etag_of(f)
        last_modified = formatdate(f.created.timestamp(), usegmt=True)
        headers = [
            ("ETag", etag),
            ("Last-Modified", last_modified),
            ("Content-Type", "application/octet-stream"),
            ("Accept-Ranges", "bytes"),
            ("x-amz-request-id", uuid.uuid4().hex[:16].upper()),
        ]
        if f.basename.endswith(".gz"):
            headers.insert(3, ("Content-Encoding", "gzip"))
        status, start, end = 200, 0, size
        range_header = req.headers.get("range")
        if_range = req.headers.get("if-range")
        if (
            range_header
            and not self.faults.ignore_range
            and _if_range_ok(if_range, etag, f.created)
        ):
            parsed = _parse_range(range_header, size)
            if parsed == "unsatisfiable":
                reply = _s3_error(
                    416,
                    "InvalidRange",
                    "The requested range is not satisfiable",
                    ActualObjectSize=size,
                    RangeRequested=range_header,
                )
                reply.headers.append(("Content-Range", f"bytes */{size}"))
                return reply
            if parsed is not None:
                status, (start, end) = 206, parsed
                headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        cut = self.faults._take_cut(f.id) if req.method == "GET" else None
        flip = size // 2 if f.id in self.faults.corrupt and size else None
        body = _object_body(f.content, start, end, flip)
        return _Reply(status, headers, body, length=end - start, cut=cut)


# ---------------------------------------------------------------------------------------------
# Functions used by the request handling
# ---------------------------------------------------------------------------------------------


def _etag_of(f: DataFile) -> str:
    return f'"{f.content.multipart_etag() if f.multipart else f.content.md5_hex()}"'


def _sign(method: str, path: str, expires: int) -> str:
    """S3 v2 query-string signature over the decoded path."""
    to_sign = f"{method}\n\n\n{expires}\n{path}".encode()
    return base64.b64encode(hmac.new(_SECRET, to_sign, hashlib.sha1).digest()).decode()


def _resolve(path: str) -> tuple[str | None, dict[str, str]]:
    if not path.startswith("/api/"):
        return None, {}
    rest = path[len("/api/") :]
    for search, pattern, view in _API_ROUTES:
        m = pattern.search(rest) if search else pattern.fullmatch(rest)
        if m:
            return view, m.groupdict()
    return None, {}


def _get_limit(req: _Request) -> int:
    try:
        return _positive_int(req.q("limit"), strict=True)
    except ValueError:
        return 100


def _get_offset(req: _Request) -> int:
    try:
        return _positive_int(req.q("offset"), strict=False)
    except ValueError:
        return 0


def _scripted_reply(role: str, status: int, retry_after: Any) -> _Reply:
    if role == "storage":
        reply = _s3_error(status, _S3_CODES.get(status, "ServiceUnavailable"), _phrase(status))
    else:
        reply = _html(status, _status_page(status))
    if retry_after is not None:
        reply.headers.append(("Retry-After", str(retry_after)))
    return reply


def _huge_page(envelope: dict[str, Any]) -> _Reply:
    """A valid page of > 50 MB: the envelope with a giant "padding" string before results."""
    head = _json_bytes({k: v for k, v in envelope.items() if k != "results"})[:-1]
    head += b',"padding":"'
    tail = b'","results":' + _json_bytes(envelope["results"]) + b"}"
    pad = b"x" * CHUNK
    n_pad = 51
    return _Reply(
        200,
        list(_API_HEADERS),
        [head, *([pad] * n_pad), tail],
        length=len(head) + n_pad * len(pad) + len(tail),
    )


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One byte range -> (start, end_exclusive); "unsatisfiable"; None to ignore the header."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if m is None or (m[1] == "" and m[2] == ""):
        return None  # malformed or several ranges: S3 serves the whole object
    if m[1] == "":
        n = int(m[2])
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size
    start = int(m[1])
    if m[2] != "" and int(m[2]) < start:
        return None  # invalid range-spec: ignored
    if start >= size:
        return "unsatisfiable"
    end = size - 1 if m[2] == "" else min(int(m[2]), size - 1)
    return start, end + 1


def _if_range_ok(if_range: str | None, etag: str, created: datetime) -> bool:
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith(('"', "W/")):
        return value == etag  # strong comparison
    try:
        return parsedate_to_datetime(value).timestamp() == int(created.timestamp())
    except (TypeError, ValueError):
        return False


def _object_body(content: Content, start: int, end: int, flip: int | None) -> Iterator[bytes]:
    pos = start
    for piece in content.iter_range(start, end):
        if flip is not None and pos <= flip < pos + len(piece):
            data = bytearray(piece)
            data[flip - pos] ^= 0xFF
            piece = bytes(data)
        pos += len(piece)
        yield piece


# ---------------------------------------------------------------------------------------------
# Sockets
# ---------------------------------------------------------------------------------------------


class _Listener(ThreadingHTTPServer):
    """One listening socket; connection threads and sockets are tracked so stop() can join."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], oh: OHServer, site: bool) -> None:
        self.oh = oh
        self.site = site
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.threads: set[threading.Thread] = set()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        ctx = self.oh._ssl_context
        if ctx is not None:  # the handshake runs on the connection's thread (_run)
            sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        t = threading.Thread(
            target=self._run, args=(request, client_address), name="ohserver-conn", daemon=True
        )
        with self.lock:
            self.conns.add(request)
            self.threads.add(t)
        t.start()

    def _run(self, request: Any, client_address: Any) -> None:
        try:
            if isinstance(request, ssl.SSLSocket):
                try:
                    request.settimeout(30)
                    request.do_handshake()
                except OSError:  # ssl.SSLError included: e.g. a client refusing our CA
                    self.shutdown_request(request)
                    return
            self.process_request_thread(request, client_address)
        finally:
            with self.lock:
                self.conns.discard(request)
                self.threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return  # client went away; normal in fault tests
        self.oh.errors.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 300
    server: _Listener

    def setup(self) -> None:
        super().setup()
        with self.server.oh._lock:
            self.server.oh._conn_serial += 1
            self.conn_id = self.server.oh._conn_serial

    def version_string(self) -> str:
        return "WSGIServer/0.2 CPython/3.11.7" if self.server.site else "AmazonS3"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        oh = self.server.oh
        start = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        split = urlsplit(self.path)
        req = _Request(
            method=self.command,
            target=self.path,
            raw_path=split.path,
            path=unquote(split.path),
            query_string=split.query,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        if not self.server.site:
            role = "storage"
        elif req.path.startswith(("/data-management/", "/redirect/")):
            role = "download"
        else:
            role = "api"
        self._entry = LogEntry(
            role=role,
            method=req.method,
            path=split.path,
            query={k: v[-1] for k, v in req.query.items()},
            headers=req.headers,
            start=start,
            connection=self.conn_id,
        )
        self._finished = False
        with oh._lock:
            oh.in_flight[role] += 1
            oh.peak_in_flight[role] = max(oh.peak_in_flight[role], oh.in_flight[role])
            site = oh.in_flight["api"] + oh.in_flight["download"]
            oh.peak_in_flight["site"] = max(oh.peak_in_flight["site"], site)
        try:
            try:
                reply = oh._handle(role, req)
            except OSError:
                raise
            except Exception:
                oh.errors.append(traceback.format_exc())
                reply = _server_error()
            self._entry.listing = req.listing
            self._send(reply, req, role)
        except OSError:
            self.close_connection = True
        finally:
            self._finish()

    def _finish(self) -> None:
        """Book-keeping of the request, done *before* its last bytes leave, so that a client
        that has read the whole response always finds it in the log."""
        if self._finished:
            return
        self._finished = True
        oh = self.server.oh
        with oh._lock:
            oh.in_flight[self._entry.role] -= 1
            self._entry.end = time.time()
            oh.log.append(self._entry)

    def _send(self, reply: _Reply, req: _Request, role: str) -> None:
        entry = self._entry
        body = reply.body
        length = reply.length if reply.length is not None else len(body)  # type: ignore[arg-type]
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        entry.status = reply.status
        if req.method == "HEAD" or length == 0:
            self._finish()
            self.end_headers()
            return
        self.end_headers()
        chunks: Iterable[bytes] = [body] if isinstance(body, bytes) else body
        pace = self.server.oh.faults.bandwidth if role == "storage" else None
        cut = reply.cut
        stopping = self.server.oh._stopping
        t0 = time.monotonic()
        for chunk in chunks:
            step = max(1, pace // 50) if pace else len(chunk) or 1
            for i in range(0, len(chunk), step):
                piece = chunk[i : i + step]
                if cut is not None and entry.bytes_sent + len(piece) >= cut.nbytes:
                    head = cut.nbytes - entry.bytes_sent
                    if cut.kind != "stall":
                        entry.bytes_sent += head
                        self._finish()
                        self.wfile.write(piece[:head])
                        self._cut(cut.kind)
                        return
                    self.wfile.write(piece[:head])
                    entry.bytes_sent += head
                    if stopping.wait(cut.seconds):
                        raise ConnectionAbortedError("server stopping")
                    piece, cut = piece[head:], None
                entry.bytes_sent += len(piece)
                if entry.bytes_sent >= length and (cut is None or cut.kind == "stall"):
                    self._finish()
                self.wfile.write(piece)
                if pace:
                    delay = t0 + entry.bytes_sent / pace - time.monotonic()
                    if delay > 0 and stopping.wait(delay):
                        raise ConnectionAbortedError("server stopping")
        if cut is not None and cut.kind != "stall":
            self._finish()
            self._cut(cut.kind)  # nbytes >= body length: cut after the whole body

    def _cut(self, kind: str) -> None:
        self.close_connection = True
        if kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # drop the makefile reference so close() really closes
            self.connection.close()  # -> RST


# ---------------------------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------------------------


def _fitbit_json(file_id: int) -> bytes:
    rng = random.Random(file_id)
    days = [
        {
            "date": f"2024-02-{d:02d}",
            "steps": rng.randint(1500, 18000),
            "resting_heart_rate": rng.randint(52, 78),
            "sleep_minutes": rng.randint(300, 540),
        }
        for d in range(1, 29)
    ]
    return json.dumps({"file": file_id, "source": "fitbit", "days": days}, indent=1).encode()


def _taxonomy_tsv(file_id: int) -> bytes:
    rng = random.Random(file_id)
    taxa = [
        "Bacteroides",
        "Prevotella",
        "Faecalibacterium",
        "Ruminococcus",
        "Akkermansia",
        "Bifidobacterium",
        "Roseburia",
        "Alistipes",
        "Blautia",
        "Eubacterium",
    ]
    rows = ["#OTU ID\ttaxonomy\tcount"]
    rows += [f"{i}\tk__Bacteria;g__{rng.choice(taxa)}\t{rng.randint(1, 5000)}" for i in range(200)]
    return ("\n".join(rows) + "\n").encode()


FASTQ_GZ_SIZE = 939_303  # file 3 of the transcripts


_ACGT = bytes(b"ACGT"[i % 4] for i in range(256))
_QUAL = bytes(b"FFFFF:,#"[i % 8] for i in range(256))


@lru_cache(maxsize=1)
def _fastq_gz() -> bytes:
    """A real gzip (of FASTQ text) of exactly FASTQ_GZ_SIZE bytes; the gzip comment pads it."""
    rng = random.Random(3)
    comp = zlib.compressobj(1, zlib.DEFLATED, -15)
    crc, isize, out = 0, 0, bytearray()
    budget = FASTQ_GZ_SIZE - 200  # room for header fields and trailer
    read = 0
    while True:
        seqs = rng.randbytes(250 * 150).translate(_ACGT)
        quals = rng.randbytes(250 * 150).translate(_QUAL)
        records = []
        for i in range(250):
            read += 1
            cut = slice(i * 150, i * 150 + 150)
            records.append(b"@AG%07d 1:N:0:1\n%s\n+\n%s\n" % (read, seqs[cut], quals[cut]))
        text = b"".join(records)
        if len(out) + len(text) > budget:  # worst case: stored uncompressed
            break
        crc, isize = zlib.crc32(text, crc), isize + len(text)
        out += comp.compress(text) + comp.flush(zlib.Z_SYNC_FLUSH)
    out += comp.flush(zlib.Z_FINISH)
    name = b"ag-000001.fastq\x00"
    fixed = 10 + len(name) + 1 + len(out) + 8
    comment = b"ohserver sample " + b"." * (FASTQ_GZ_SIZE - fixed - 16) + b"\x00"
    header = b"\x1f\x8b\x08\x18" + struct.pack("<I", 0) + b"\x00\x03" + name + comment
    data = header + bytes(out) + struct.pack("<II", crc, isize & 0xFFFFFFFF)
    assert len(data) == FASTQ_GZ_SIZE, len(data)
    return data


def _load_sample(s: OHServer) -> None:
    s.add_datatype(
        1,
        "Activity tracking",
        description="Step counts, activity and exercise data",
        details="Step counts, activity and exercise data (local sample)",
    )
    s.add_datatype(
        2,
        "Fitbit",
        1,
        description="Fitbit device exports",
        details="Fitbit device exports (local sample)",
    )
    s.add_datatype(
        3,
        "Microbiome",
        description="Microbiome sequencing data",
        details="Microbiome sequencing data (local sample)",
        uploadable=True,
    )
    s.add_datatype(
        4,
        "Genome",
        description="Whole genome or genotyping data",
        details="Whole genome or genotyping data (local sample)",
        uploadable=True,
    )
    s.add_project(
        128,
        "American Gut",
        slug="american-gut",
        is_study=True,
        leader="Rob Knight",
        long_description="American Gut participants can link their 16S rRNA sequencing data "
        "and survey responses.",
        organization="UC San Diego",
        registered_datatypes=[3],
        returned_data_description="16S sequencing reads (FASTQ) and taxonomy tables",
        short_description="Microbiome sequencing data from the American Gut Project.",
    )
    s.add_project(
        102,
        "Fitbit Connection",
        slug="fitbit-connection",
        info_url="http://127.0.0.1:8765/info/fitbit/",
        leader="Open Humans Foundation",
        long_description="Connects to the Fitbit API and stores daily activity, sleep and "
        "heart-rate data as JSON.",
        organization="Open Humans Foundation",
        registered_datatypes=[1, 2],
        returned_data_description="Fitbit intraday and daily summary JSON files",
        short_description="Import your Fitbit data into Open Humans.",
        type="oauth2",
    )
    # Sample 13 lists 200 as approved; "all public sharing disabled" is no_public_data.
    s.add_project(
        200,
        "Private Diary Study",
        slug="private-diary-study",
        is_study=True,
        leader="Dr. Private",
        no_public_data=True,
        short_description="Project with all public sharing disabled.",
    )
    for uid, username, name in [
        (1, "projcoordinator", "Project Coordinator"),
        (2, "alice", "Alice Example"),
        (3, "bob_smith", "Bob Smith"),
        (4, "carol", "Carol Hidden"),
        (5, "dave", "Dave Private"),
    ]:
        s.add_member(username, name, id=uid)
    fit = ((1, 2), 102, "Fitbit Connection", "fitbit-connection")
    gut = ((3,), 128, "American Gut", "american-gut")
    gz = _LazyContent(FASTQ_GZ_SIZE, _fastq_gz)
    for fid, basename, username, hhmm, (dts, pid, pname, slug), content in [
        (1, "fitbit-data.json", "alice", "12:00", fit, _fitbit_json(1)),
        (2, "fitbit-data.json", "alice", "13:30", fit, _fitbit_json(2)),
        (3, "ag-000001.fastq.gz", "alice", "12:10", gut, gz),
        (4, "fitbit-data.json", "bob_smith", "12:20", fit, _fitbit_json(4)),
        (5, "taxonomy-summary.tsv", "bob_smith", "12:30", gut, _taxonomy_tsv(5)),
        (6, "fitbit-data.json", "carol", "12:40", fit, _fitbit_json(6)),
        # not listed: an upload that never completed (sample 39: "This file is unavailable.")
        (8, "ag-000002.fastq.gz", "bob_smith", "13:00", gut, b""),
    ]:
        s.add_file(
            id=fid,
            basename=basename,
            content=content,
            project_id=pid,
            username=username,
            created=f"2024-03-01T{hhmm}:00Z",
            datatype_ids=dts,
            metadata={"tags": ["sample", slug], "description": f"{basename} from {pname}"},
            available=fid != 8,
        )
    s.hide_membership("carol", 102)
    # not listed: dave's file in the project with all public sharing disabled
    s.add_file(
        id=7,
        basename="diary-2024-03.txt",
        content=b"dear diary\n" * 40,
        project_id=200,
        username="dave",
        created="2024-03-01T12:50:00Z",
        metadata={"tags": ["diary"], "description": "Private diary"},
    )
    s.join("dave", 102)  # 102 has 4 authorized members in sample 13


_P176_MEMBERS = [
    ("benc", 1601, "BenC"),
    ("esenabre", 11041, "Enric Senabre"),
    ("jasteige", 8095, "Janie"),
    ("mw_pw", 7313, "mw.pw"),
    ("MxRemy", 1673, "Remy Way"),
    ("phenylalanine", 1404, "ilan"),
    ("rssfed23", 8664, "Rob Knight"),
    ("stephenbrad", 2823, "stephen bradley"),
    ("tuuli", 126, "Suvi-Tuuli Allan"),
    ("Whoisdsmith", 20123, "Dustin Smith"),
]
# (id, kind, created, username): A = listening archive, M = track metadata
_P176_FILES = [
    (57602983, "A", "2022-11-15T22:25:48.853753", "benc"),
    (57585843, "M", "2022-11-15T12:43:46.116561", "benc"),
    (57600662, "A", "2022-11-15T21:08:12.504239", "esenabre"),
    (57581180, "M", "2022-11-15T10:44:12.881046", "esenabre"),
    (57597289, "A", "2022-11-15T19:04:43.000646", "esenabre"),
    (57592456, "M", "2022-11-15T16:12:52.941638", "esenabre"),
    (57592995, "A", "2022-11-15T16:29:31.758550", "esenabre"),
    (21973602, "M", "2020-09-24T14:42:56.350565", "jasteige"),
    (21973600, "A", "2020-09-24T14:42:55.428171", "jasteige"),
    (57603002, "A", "2022-11-15T22:26:32.577917", "mw_pw"),
    (57585884, "M", "2022-11-15T12:44:33.620721", "mw_pw"),
    (35054123, "A", "2021-08-09T04:00:09.903280", "MxRemy"),
    (35054264, "M", "2021-08-09T04:04:28.186619", "MxRemy"),
    (19055415, "M", "2020-07-06T14:33:37.074690", "phenylalanine"),
    (19055664, "A", "2020-07-06T14:44:36.135966", "phenylalanine"),
    (57581394, "M", "2022-11-15T10:50:14.003542", "rssfed23"),
    (57598347, "A", "2022-11-15T19:41:47.706498", "rssfed23"),
    (57602200, "A", "2022-11-15T21:58:14.705820", "rssfed23"),
    (57593564, "A", "2022-11-15T16:49:36.762068", "rssfed23"),
    (57588874, "A", "2022-11-15T14:07:19.605303", "rssfed23"),
    (57581355, "M", "2022-11-15T10:49:10.431047", "stephenbrad"),
    (57594447, "A", "2022-11-15T17:21:45.911923", "stephenbrad"),
    (57598500, "A", "2022-11-15T19:47:23.811512", "stephenbrad"),
    (57602770, "A", "2022-11-15T22:21:19.075726", "stephenbrad"),
    (57594444, "A", "2022-11-15T17:21:38.402313", "tuuli"),
    (57598493, "A", "2022-11-15T19:47:17.012456", "tuuli"),
    (57602765, "A", "2022-11-15T22:21:11.580616", "tuuli"),
    (57583087, "M", "2022-11-15T11:36:38.478955", "tuuli"),
    (57575426, "M", "2022-11-15T07:10:55.853977", "tuuli"),
    (57602126, "A", "2022-11-15T21:56:10.520270", "Whoisdsmith"),
    (57581244, "M", "2022-11-15T10:45:47.830757", "Whoisdsmith"),
]
_P176_KINDS = {
    "A": (
        "spotify-listening-archive.json",
        {"tags": ["spotify"], "description": "Spotify Play History"},
    ),
    "M": (
        "spotify-track-metadata.json",
        {"tags": ["spotify", "metadata"], "description": "Spotify metadata on songs you listen to"},
    ),
}


def _load_project176(s: OHServer) -> None:
    # Only the files, users and datatype URL are real; the project/datatype texts are made up.
    s.add_datatype(
        14,
        "Spotify",
        description="Spotify listening history and track metadata",
        details="Music listening data exported from Spotify",
    )
    s.add_project(
        176,
        "Spotify",
        slug="spotify",
        leader="Bastian Greshake Tzovaras",
        organization="Open Humans Foundation",
        registered_datatypes=[14],
        type="oauth2",
        short_description="Import your Spotify listening history into Open Humans.",
        returned_data_description="Spotify play history and track metadata (JSON)",
    )
    for username, uid, name in _P176_MEMBERS:
        s.add_member(username, name, id=uid)
    for fid, kind, created, username in _P176_FILES:
        basename, metadata = _P176_KINDS[kind]
        size = random.Random(fid).randint(3_000, 100_000)
        s.add_file(
            id=fid,
            basename=basename,
            content=named_content(basename, size, seed=fid),
            project_id=176,
            username=username,
            created=created + "Z",
            datatype_ids=(14,),
            metadata=metadata,
        )


def _generate(
    s: OHServer,
    n_files: int,
    n_members: int,
    min_size: int,
    max_size: int,
    project_id: int,
    datatype_id: int,
    seed: int,
    hidden_fraction: float,
) -> list[int]:
    rng = random.Random(seed)
    with s._lock:
        if datatype_id not in s._datatypes:
            s.add_datatype(datatype_id, f"Generated {datatype_id}")
        if project_id not in s._projects:
            s.add_project(
                project_id,
                f"Generated Project {project_id}",
                registered_datatypes=[datatype_id],
                short_description="Synthetic files for tests and benchmarks.",
            )
        usernames = []
        for i in range(1, n_members + 1):
            username = f"m{seed:x}_{i:05d}" if seed else f"m{i:05d}"
            if username not in s._members:
                s.add_member(username, f"Member {i}")
            usernames.append(username)
        names = ["data.json", "export.csv", "reads.fastq", "notes (draft).txt", "data.json"]
        ids = []
        lo, hi = max(1, min_size), max(1, max_size)
        for _ in range(n_files):
            size = int(round(lo * (hi / lo) ** rng.random())) if hi > lo else lo
            size = max(min_size, min(max_size, size))
            basename = rng.choice(names)
            fid = s.add_file(
                basename=basename,
                content=named_content(basename, size, seed=seed * 1_000_003 + s._next_id),
                project_id=project_id,
                username=rng.choice(usernames),
                datatype_ids=(datatype_id,),
                metadata={"tags": ["generated"], "description": "Synthetic file"},
            )
            ids.append(fid)
        for username in usernames:
            if rng.random() < hidden_fraction and (username, project_id) in s._memberships:
                s.hide_membership(username, project_id)
    return ids


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.ohserver", description="Run a local Open Humans server."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="site port (0: any)")
    parser.add_argument("--storage-port", type=int, default=0, help="storage port (0: any)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--sample", action="store_true", help="transcript data (default)")
    data.add_argument("--project176", action="store_true", help="the real project 176 listing")
    data.add_argument("--generate", type=int, metavar="N", help="N synthetic files")
    parser.add_argument("--members", type=int, default=50, help="members for --generate")
    parser.add_argument("--min-size", type=int, default=1_000)
    parser.add_argument("--max-size", type=int, default=1_000_000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--bandwidth", type=int, default=None, help="storage bytes/s cap")
    parser.add_argument("--key-ttl", type=float, default=3600.0, help="download key lifetime")
    parser.add_argument("--seed", type=int, default=None, help="seed for shuffles and keys")
    parser.add_argument(
        "--tls", action="store_true", help="serve https:// (prints the CA bundle to trust)"
    )
    parser.add_argument(
        "--same-ties",
        action="store_true",
        help="order a member's files the same way for every request with the same offset+limit",
    )
    cap = parser.add_argument_group(
        "capacity model of the file listings",
        "Off unless one of these is given. Defaults: the real server's figures at 1/20 of real "
        "time. A listing past the timeout answers HTTP 500 (HTML) and counts as a timeout.",
    )
    defaults = Capacity()
    cap.add_argument("--capacity", action="store_true", help="turn it on with the defaults")
    cap.add_argument(
        "--per-record",
        type=float,
        metavar="S",
        help=f"CPU seconds per listed record (default {defaults.per_record}; real 0.008)",
    )
    cap.add_argument(
        "--per-request",
        type=float,
        metavar="S",
        help=f"CPU seconds per listing request (default {defaults.per_request})",
    )
    cap.add_argument(
        "--cores",
        type=int,
        metavar="N",
        help=f"cores the workers share (default {defaults.cores})",
    )
    cap.add_argument(
        "--router-timeout",
        type=float,
        metavar="S",
        help=f"seconds before a listing is killed with an HTML 500 (default {defaults.timeout}; "
        "real 30)",
    )
    args = parser.parse_args(argv)
    capacity = None
    settings = {
        "per_record": args.per_record,
        "per_request": args.per_request,
        "cores": args.cores,
        "timeout": args.router_timeout,
    }
    if args.capacity or any(v is not None for v in settings.values()):
        capacity = Capacity(**{k: v for k, v in settings.items() if v is not None})
        if capacity.cores < 1 or capacity.timeout <= 0 or capacity.per_record < 0:
            parser.error("--cores must be >= 1, --router-timeout > 0, --per-record >= 0")

    server = OHServer(
        host=args.host,
        port=args.port,
        storage_port=args.storage_port,
        key_ttl=args.key_ttl,
        seed=args.seed,
        tls=args.tls,
    )
    if args.project176:
        server.load_project176()
    elif args.generate is not None:
        server.generate(args.generate, args.members, args.min_size, args.max_size)
    else:
        server.load_sample()
    if args.latency:
        server.faults.latency.update(dict.fromkeys(ROLES, args.latency))
    server.faults.bandwidth = args.bandwidth
    server.same_ties = args.same_ties
    server.capacity = capacity
    server.start()

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)  # kill PID stops as cleanly as Ctrl-C
    print(f"OHPUB_BASE_URL={server.base_url}", flush=True)
    if args.tls:
        print(f"REQUESTS_CA_BUNDLE={server.ca_bundle}", flush=True)
    print(
        f"ohserver: site {server.base_url}  storage {server.storage_url}  "
        f"files {len(server.file_ids(public_only=True))} listed; Ctrl-C stops",
        flush=True,
    )
    if capacity is not None:
        print(
            f"ohserver: capacity {capacity.per_record * 1000:g} ms/record + "
            f"{capacity.per_request * 1000:g} ms/request on {capacity.cores} cores, "
            f"listings killed at {capacity.timeout:g} s "
            f"(at most {capacity.records_alone()} records per request alone)",
            flush=True,
        )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not break stop()
            signal.signal(signum, signal.SIG_IGN)
        server.stop()
        print("ohserver: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
