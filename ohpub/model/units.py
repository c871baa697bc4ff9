"""Sizes and durations: parsed from options, shown to people. Pure functions."""

from __future__ import annotations

import re

from ohpub.model.errors import UsageError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.I)
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", re.I)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_HINT = "use e.g. 90m, 26h or 2d"


def parse_size(value: str) -> int:
    """``500M`` = 500 MiB (K, M, G, T are powers of 1024, as in rclone and curl); ``500MB``
    = 500 * 10**6; a plain number is bytes."""
    m = _SIZE_RE.match(value)
    if not m:
        raise UsageError(f"invalid size {value!r}", hint="use e.g. 500M, 2G or 1000000")
    number, unit, suffix = float(m.group(1)), m.group(2).lower(), m.group(3).lower()
    power = "kmgtp".index(unit) + 1 if unit else 0
    base = 1000 if suffix == "b" and unit else 1024
    return int(number * base**power)


def parse_duration(value: str) -> float:
    """A DURATION: ``90s``, ``90m``, ``26h``, ``2d``, ``1w``. The unit is required (``26``
    alone is an error, not a silent 26 seconds); ``0`` alone is allowed, being 0 in any unit."""
    m = _DURATION_RE.fullmatch(value)
    if not m:
        raise UsageError(f"invalid duration {value!r}", hint=_DURATION_HINT)
    number, unit = float(m.group(1)), m.group(2).lower()
    if not unit and number != 0:
        raise UsageError(
            f"duration {value.strip()!r} has no unit",
            hint=f"add one: {m.group(1)}s, {m.group(1)}m, {m.group(1)}h or {m.group(1)}d",
        )
    return number * _SECONDS[unit]


def parse_seconds(value: str) -> float:
    """A SECONDS value (timeouts, retry timing): a plain number is seconds, and a unit is
    allowed too (``90``, ``90s``, ``2m``)."""
    m = _DURATION_RE.fullmatch(value)
    if not m:
        raise UsageError(f"invalid number of seconds {value!r}", hint="use e.g. 30 or 2m")
    return float(m.group(1)) * _SECONDS[m.group(2).lower()]


def human_bytes(n: float) -> str:
    """Decimal units, as download tools and file managers show them: ``4.1 MB``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def clock(seconds: float) -> str:
    """A running clock as download tools show it: ``00:07``, ``03:25``, ``1:02:03``."""
    s = max(0, int(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def human_duration(seconds: float) -> str:
    """A span for a person: ``0.4 s``, ``12 s``, ``3 min 4 s``, ``26 h``, ``2 days``."""
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f} s"
    n = round(s)
    if n < 60:
        return f"{n} s"
    if n < 3600:
        m, rest = divmod(n, 60)
        return f"{m} min {rest} s" if rest and m < 10 else f"{m} min"
    if n < 2 * 86400 or n % 86400:
        h, rest = divmod(n, 3600)
        return f"{h} h {rest // 60} min" if rest >= 60 and h < 10 else f"{h} h"
    d = n // 86400
    return f"{d} days"


def ago(seconds: float) -> str:
    """How long ago, for a person: ``just now``, ``40 s ago``, ``12 min ago``, ``2 h ago``,
    ``3 days ago`` (one unit, rounded down)."""
    s = int(seconds)
    if s < 5:
        return "just now"
    if s < 60:
        return f"{s} s ago"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 2 * 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


def plural(n: int, word: str) -> str:
    """``1 file``, ``2 files``, ``0 files``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
