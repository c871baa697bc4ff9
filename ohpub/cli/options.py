"""The options and arguments of the data commands, declared once each (``Annotated``
aliases). The seven filters are one set (``ohpub.Filters``): ``with_filters`` gives a
command all of them and calls it with one ``Filters``."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ohpub.cli.app import DEFAULTS
from ohpub.model.errors import UsageError
from ohpub.model.filters import FilterError, Filters
from ohpub.model.units import human_bytes

F = TypeVar("F", bound=Callable[..., Any])

ProjectOpt = Annotated[
    list[int] | None,
    typer.Option(
        "--project",
        "-p",
        min=1,
        envvar="OHPUB_PROJECT",
        metavar="ID",
        help="Only files of project ID (repeatable: any of them).",
    ),
]


UserOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--user",
        "-u",
        envvar="OHPUB_USER",
        metavar="USERNAME",
        help="Only files of member USERNAME (repeatable).",
    ),
]


DatatypeOpt = Annotated[
    list[int] | None,
    typer.Option(
        "--datatype",
        "-t",
        min=1,
        envvar="OHPUB_DATATYPE",
        metavar="ID",
        help="Only files of datatype ID (repeatable: any of them).",
    ),
]


TagOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--tag",
        envvar="OHPUB_TAG",
        metavar="TAG",
        help="Only files with metadata tag TAG (repeatable: any of them).",
    ),
]


NameOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--name",
        envvar="OHPUB_NAME",
        metavar="GLOB",
        help="Only files whose basename matches GLOB, e.g. '*.json' (repeatable).",
    ),
]


SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        envvar="OHPUB_SINCE",
        metavar="DATE",
        help="Only files created on or after DATE (YYYY-MM-DD or ISO 8601 time; UTC).",
    ),
]


UntilOpt = Annotated[
    str | None,
    typer.Option(
        "--until",
        envvar="OHPUB_UNTIL",
        metavar="DATE",
        help="Only files created on or before DATE (a whole day is included).",
    ),
]


CutoffOpt = Annotated[
    str | None,
    typer.Option(
        "--multi-thread-cutoff",
        envvar="OHPUB_MULTI_THREAD_CUTOFF",
        metavar="SIZE",
        show_default=False,
        help="Files of at least SIZE may come as parallel ranges over several connections, "
        "when one stream is held back "
        f"(default {human_bytes(DEFAULTS.range_cutoff)}: {DEFAULTS.range_cutoff // 2**20}M).",
    ),
]


FILTER_OPTIONS: dict[str, Any] = {
    "project": ProjectOpt,
    "user": UserOpt,
    "datatype": DatatypeOpt,
    "tag": TagOpt,
    "name": NameOpt,
    "since": SinceOpt,
    "until": UntilOpt,
}
"""One option per field of ``Filters``, in its order (the order of ``--help``)."""
assert tuple(FILTER_OPTIONS) == Filters.names(), "cli filter options != ohpub.Filters"


def with_filters(command: F) -> F:
    """Give ``command`` the filter options where its ``filters: Filters`` parameter is, and
    call it with one ``Filters`` built from them, checked: a bad value is a usage error
    that names the option (``invalid value for --since: 'x' is not a date``)."""
    sig = inspect.signature(command, eval_str=True)
    params = list(sig.parameters.values())
    at = [p.name for p in params].index("filters")
    params[at : at + 1] = [
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=a)
        for n, a in FILTER_OPTIONS.items()
    ]

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        filters = Filters(**{n: kwargs.pop(n) for n in FILTER_OPTIONS})
        try:
            filters.to_filter()
        except FilterError as exc:
            where = _option_of(exc.field, kwargs.get("ctx"))
            raise UsageError(f"invalid value for {where}: {exc.detail}", hint=exc.hint) from None
        return command(*args, filters=filters, **kwargs)

    run.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run  # type: ignore[return-value]


def _option_of(field: str, ctx: Any) -> str:
    """``--since``, or ``--since (from OHPUB_SINCE)`` when the environment gave the value
    and the command line did not."""
    info = FILTER_OPTIONS[field].__metadata__[0]
    env = info.envvar if isinstance(info.envvar, str) else None
    source = ctx.get_parameter_source(field) if ctx is not None else None
    if env and getattr(source, "name", "") == "ENVIRONMENT" and os.environ.get(env):
        return f"--{field} (from {env})"
    return f"--{field}"


class Kind(str, Enum):
    files = "files"
    projects = "projects"
    datatypes = "datatypes"
    members = "members"


class ListFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


class MirrorFormat(str, Enum):
    text = "text"
    jsonl = "jsonl"


class StatusFormat(str, Enum):
    text = "text"
    json = "json"


DestArg = Annotated[
    str,  # not Path: Path turns s3://b/p into s3:/b/p (the library parses DEST once)
    typer.Argument(
        envvar="OHPUB_DEST",
        metavar="DEST",
        show_default=False,
        help="The mirror directory (created by the first 'ohpub mirror').",
    ),
]


_ListKindOpt = Annotated[
    Kind,
    typer.Argument(
        metavar="KIND",
        help="What to list: files (default), projects, datatypes or members.",
        show_default=False,
    ),
]


_ListFmtOpt = Annotated[
    ListFormat | None,
    typer.Option(
        "--format",
        "-f",
        envvar="OHPUB_LIST_FORMAT",
        metavar="[table|json|jsonl|csv]",
        help="Output format (default: table on a terminal, jsonl otherwise).",
        show_default=False,
    ),
]


_ListLimitOpt = Annotated[
    int | None,
    typer.Option(
        "--limit",
        min=0,
        envvar="OHPUB_LIMIT",
        metavar="N",
        help="Stop after N records (and fetch no more pages).",
    ),
]


_ListOldLimitOpt = Annotated[
    int | None,
    typer.Option(
        "-n",
        min=0,
        hidden=True,
        metavar="N",
        help="Deprecated spelling of --limit (-n means --dry-run, as in mirror).",
    ),
]
"""``list -n N``, kept for one release with a warning: ``-n`` is ``--dry-run``."""


_MirrorDestOpt = Annotated[
    str,  # not Path: see DestArg
    typer.Argument(
        envvar="OHPUB_DEST",
        metavar="DEST",
        show_default=False,
        help="Directory to mirror into (created if missing; its parent must exist).",
    ),
]


_MirrorJobsOpt = Annotated[
    int,
    typer.Option(
        "--jobs",
        "-j",
        envvar="OHPUB_JOBS",
        min=1,
        max=64,
        metavar="N",
        help="Parallel storage transfers.",
    ),
]


_MirrorDryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        "-n",
        envvar="OHPUB_DRY_RUN",
        help="Show the plan (to download: count and bytes; to rename; to remove; "
        "unchanged) and change nothing.",
    ),
]


_MirrorDeleteOpt = Annotated[
    bool,
    typer.Option(
        "--delete/--no-delete",
        envvar="OHPUB_DELETE",
        show_default=False,
        help="Delete local files that a complete listing no longer has (default: keep "
        "them, marked removed-upstream).",
    ),
]


_MirrorMaxSizeOpt = Annotated[
    str | None,
    typer.Option(
        "--max-size",
        envvar="OHPUB_MAX_SIZE",
        metavar="SIZE",
        help="Skip files larger than SIZE: 500M = 500 MiB, 2G, 500MB = 500*10^6 bytes.",
    ),
]


_MirrorStrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict/--no-strict",
        envvar="OHPUB_STRICT",
        show_default=False,
        help="Files Open Humans reports unavailable fail the run (exit 1).",
    ),
]


_MirrorChecksumOpt = Annotated[
    bool,
    typer.Option(
        "--checksum/--no-checksum",
        envvar="OHPUB_CHECKSUM",
        show_default=False,
        help="Re-hash every placed file first (not only those whose size or mtime "
        "changed) and download again any whose bytes differ.",
    ),
]


_MirrorFmtOpt = Annotated[
    MirrorFormat,
    typer.Option(
        "--format",
        "-f",
        envvar="OHPUB_MIRROR_FORMAT",
        metavar="[text|jsonl]",
        help="text: a summary line; jsonl: also one record per file on stdout (with "
        "--dry-run, a totals record last).",
    ),
]


_FetchIdsOpt = Annotated[
    list[int],
    typer.Argument(min=1, metavar="ID", show_default=False, help="File ids to download."),
]


_FetchDirectoryOpt = Annotated[
    Path,
    typer.Option(
        "--dir",
        "-d",
        envvar="OHPUB_DIR",
        metavar="DIR",
        file_okay=False,
        help="Directory to write <basename> into (created if missing).",
    ),
]


_FetchOutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        envvar="OHPUB_OUTPUT",
        metavar="PATH",
        help="Write the one file to PATH; '-' streams it to stdout.",
    ),
]


_FetchForceOpt = Annotated[
    bool,
    typer.Option(
        "--force/--no-force",
        envvar="OHPUB_FORCE",
        show_default=False,
        help="Overwrite an existing file with other content at the target.",
    ),
]


_VerifyFmtOpt = Annotated[
    MirrorFormat,
    typer.Option(
        "--format",
        "-f",
        envvar="OHPUB_VERIFY_FORMAT",
        metavar="[text|jsonl]",
        help="text: problems and a summary; jsonl: one record per file.",
    ),
]


_StatusMaxAgeOpt = Annotated[
    str | None,
    typer.Option(
        "--max-age",
        envvar="OHPUB_MAX_AGE",
        metavar="DURATION",
        help="Exit 1 when the last complete run ended longer ago than DURATION "
        "(with a unit: 90m, 26h, 2d), or never did.",
    ),
]


_StatusFmtOpt = Annotated[
    StatusFormat,
    typer.Option(
        "--format",
        "-f",
        envvar="OHPUB_STATUS_FORMAT",
        metavar="[text|json]",
        help="text for people, json for scripts.",
    ),
]
