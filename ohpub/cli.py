"""The ``ohpub`` command line: parse, call the library, render, map errors to exit codes.

Every command is thin: the work happens in ``api``, ``mirror``, ``fetch`` and
``verify``; this module only turns options into calls and results into output.
Errors become one line on stderr (``ohpub: error: ...``) and a documented exit
code: 0 ok, 1 failure, 2 usage or bad input, 3 DEST locked, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, time, timedelta, timezone
from enum import Enum
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

from ohpub import __version__
from ohpub.api import DEFAULT_BASE_URL, Client, FileFilter, RetryPolicy, redact
from ohpub.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    OhpubError,
    UsageError,
)
from ohpub.fetch import FetchResult, fetch_files
from ohpub.mirror import Mirror, MirrorOptions
from ohpub.output import (
    FORMATS,
    OBJECT_COLUMNS,
    MirrorView,
    print_error,
    print_warning,
    summary_line,
    write_files,
    write_records,
)
from ohpub.verify import mirror_status, verify_mirror

log = logging.getLogger("ohpub")
T = TypeVar("T")

# Typer bundles its own click; its exception base is reached through a public class.
_ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


class _Group(TyperGroup):
    """Routes every invocation (console script, ``python -m``, CliRunner) through one
    error handler, so usage errors print one ``ohpub: error:`` line like every other."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        code = _guarded(
            lambda: super(_Group, self).main(
                args=args,
                prog_name=prog_name or "ohpub",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        )
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=_Group,
    name="ohpub",
    help="Download and mirror the public data files of Open Humans.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _Settings:
    base_url: str = DEFAULT_BASE_URL
    verbose: bool = False
    quiet: bool = False
    timeout: float = 30.0
    api_concurrency: int = 4
    page_size: int = 500
    retries: int = 6


settings = _Settings()


def _guarded(call: Callable[[], Any]) -> int:
    """Run the command; turn every failure into one stderr line and an exit code."""
    try:
        rv = call()
        return rv if isinstance(rv, int) else 0
    except OhpubError as exc:
        _log_traceback()
        print_error(redact(exc.message), exc.hint)
        return exc.exit_code
    except _ClickException as exc:
        message = exc.format_message()  # type: ignore[attr-defined]
        ctx = getattr(exc, "ctx", None)
        hint = f"see '{ctx.command_path} --help'" if ctx is not None else "see 'ohpub --help'"
        print_error(message, hint)
        return int(getattr(exc, "exit_code", EXIT_USAGE))
    except (KeyboardInterrupt, typer.Abort):
        print("ohpub: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except OSError as exc:
        _log_traceback()
        print_error(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a traceback
        _log_traceback()
        print_error(
            f"internal error: {type(exc).__name__}: {redact(str(exc))}",
            "run with --verbose for a traceback, and please report it",
        )
        return EXIT_FAILURE


def _log_traceback() -> None:
    if settings.verbose:
        print(redact(traceback.format_exc()), file=sys.stderr)


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush is quiet."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _version(value: bool) -> None:
    if value:
        print(f"ohpub {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    base_url: Annotated[
        str,
        typer.Option(
            "--base-url",
            envvar="OHPUB_BASE_URL",
            help="Open Humans server to talk to (env OHPUB_BASE_URL).",
            show_default=True,
        ),
    ] = DEFAULT_BASE_URL,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log each request (keys redacted).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")] = False,
    timeout: Annotated[
        float,
        typer.Option(
            envvar="OHPUB_TIMEOUT", min=0.1, help="Seconds to wait for the server to answer."
        ),
    ] = 30.0,
    api_concurrency: Annotated[
        int,
        typer.Option(
            envvar="OHPUB_API_CONCURRENCY",
            min=1,
            max=32,
            help="Requests in flight to Open Humans itself (listing, keys).",
        ),
    ] = 4,
    page_size: Annotated[
        int,
        typer.Option(envvar="OHPUB_PAGE_SIZE", min=1, hidden=True, help="Listing page size."),
    ] = 500,
    retries: Annotated[
        int,
        typer.Option(envvar="OHPUB_RETRIES", min=1, max=50, help="Attempts per request."),
    ] = 6,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Download and mirror the public data files of Open Humans.

    Exit codes: 0 ok, 1 failure, 2 usage or bad input, 3 destination locked,
    130 interrupted.
    """
    settings.base_url = base_url
    settings.verbose = verbose
    settings.quiet = quiet
    settings.timeout = timeout
    settings.api_concurrency = api_concurrency
    settings.page_size = page_size
    settings.retries = retries
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("ohpub: %(message)s"))
    root = logging.getLogger("ohpub")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if verbose:
        for name in ("urllib3",):
            lg = logging.getLogger(name)
            lg.handlers[:] = [handler]
            lg.setLevel(logging.DEBUG)


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _client(jobs: int = 0) -> Client:
    return Client(
        settings.base_url,
        timeout=settings.timeout,
        api_concurrency=settings.api_concurrency,
        pool_size=max(8, jobs + settings.api_concurrency),
        page_size=settings.page_size,
        retry=RetryPolicy(attempts=settings.retries),
        on_warning=lambda m: None if settings.quiet else print_warning(m),
    )


# -- option parsing helpers ---------------------------------------------------------------


def parse_date(value: str, *, end: bool = False) -> datetime:
    """DATE (YYYY-MM-DD, UTC day) or an ISO 8601 timestamp; --until DATE includes that day."""
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = datetime.combine(datetime.fromisoformat(text).date(), time(), timezone.utc)
            return day + timedelta(days=1) if end else day
        dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise UsageError(
            f"invalid date {value!r}", hint="use YYYY-MM-DD or an ISO 8601 timestamp"
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.I)


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


def _filter(
    project: list[int] | None,
    user: list[str] | None,
    datatype: list[int] | None,
    tag: list[str] | None,
    name: list[str] | None,
    since: str | None,
    until: str | None,
) -> FileFilter:
    for u in user or []:
        if not re.fullmatch(r"[A-Za-z_0-9]+", u):
            raise UsageError(f"invalid username {u!r}", hint="usernames are letters, digits, _")
    return FileFilter(
        projects=tuple(dict.fromkeys(project or [])),
        users=tuple(dict.fromkeys(user or [])),
        datatypes=tuple(dict.fromkeys(datatype or [])),
        tags=tuple(tag or []),
        names=tuple(name or []),
        since=parse_date(since) if since else None,
        until=parse_date(until, end=True) if until else None,
    )


ProjectOpt = Annotated[
    list[int] | None,
    typer.Option(
        "--project",
        "-p",
        min=1,
        help="Project id (repeatable: any of them).",
        rich_help_panel="Filters",
    ),
]
UserOpt = Annotated[
    list[str] | None,
    typer.Option("--user", "-u", help="Member username (repeatable).", rich_help_panel="Filters"),
]
DatatypeOpt = Annotated[
    list[int] | None,
    typer.Option(
        "--datatype", "-t", min=1, help="Datatype id (repeatable).", rich_help_panel="Filters"
    ),
]
TagOpt = Annotated[
    list[str] | None,
    typer.Option(help="Metadata tag (repeatable: any of them).", rich_help_panel="Filters"),
]
NameOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="Glob on the basename, e.g. '*.json' (repeatable).", rich_help_panel="Filters"
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        help="Only files created on or after DATE (YYYY-MM-DD or ISO time, UTC).",
        rich_help_panel="Filters",
    ),
]
UntilOpt = Annotated[
    str | None,
    typer.Option(
        help="Only files created on or before DATE (a whole day is included).",
        rich_help_panel="Filters",
    ),
]


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


def _default_format(fmt: ListFormat | None) -> str:
    if fmt is not None:
        return fmt.value
    return "table" if sys.stdout.isatty() else "jsonl"


def _limited(items: Iterator[T], limit: int | None) -> Iterator[T]:
    return islice(items, limit) if limit is not None else items


# -- commands ---------------------------------------------------------------------------------


@app.command("list")
def list_cmd(
    kind: Annotated[Kind, typer.Argument(help="What to list.")] = Kind.files,
    project: ProjectOpt = None,
    user: UserOpt = None,
    datatype: DatatypeOpt = None,
    tag: TagOpt = None,
    name: NameOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    fmt: Annotated[
        ListFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="Output format [default: table on a terminal, jsonl otherwise].",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=0, help="Stop after N records.")
    ] = None,
) -> None:
    """List public data files (default), projects, datatypes or members.

    Filters go into the request path and are checked again on every record, because the
    server ignores query filters. json/jsonl keep every field as the server sent it.

    Examples:

      ohpub list --project 176

      ohpub list --project 176 --format jsonl | jq -r '[.id, .basename] | @tsv'

      ohpub list projects --format csv > projects.csv
    """
    out_fmt = _default_format(fmt)
    flt = _filter(project, user, datatype, tag, name, since, until)
    with _client() as client:
        if kind is Kind.files:
            write_files(_limited(client.iter_files(flt), limit), out_fmt, sys.stdout)
            return
        if flt != FileFilter():
            raise UsageError(f"file filters do not apply to 'list {kind.value}'")
        items = _limited(client.iter_objects(kind.value), limit)
        write_records(items, out_fmt, sys.stdout, columns=OBJECT_COLUMNS[kind.value])


@app.command("mirror")
def mirror_cmd(
    dest: Annotated[Path, typer.Argument(help="Directory to mirror into (created if missing).")],
    project: ProjectOpt = None,
    user: UserOpt = None,
    datatype: DatatypeOpt = None,
    tag: TagOpt = None,
    name: NameOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", "-j", envvar="OHPUB_JOBS", min=1, max=64, help="Parallel storage transfers."
        ),
    ] = 8,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Show the plan with totals; change nothing.")
    ] = False,
    delete: Annotated[
        bool,
        typer.Option(
            help="Delete local files that a complete listing no longer has (default: keep)."
        ),
    ] = False,
    max_size: Annotated[
        str | None,
        typer.Option(help="Skip files larger than SIZE (e.g. 500M = 500 MiB, 2G, 500MB)."),
    ] = None,
    strict: Annotated[bool, typer.Option(help="Unavailable files fail the run (exit 1).")] = False,
    fmt: Annotated[
        MirrorFormat,
        typer.Option(
            "--format", "-f", help="text: a summary; jsonl: one record per file on stdout."
        ),
    ] = MirrorFormat.text,
) -> int:
    """Mirror public files into DEST/<username>/<project id>/<name>, resumably.

    Files already present and unchanged cost no download; interrupted downloads resume;
    a file appears at its final path only when complete and verified. Exit 0 when every
    file in scope is present and verified, 1 otherwise, 3 when another run holds DEST.

    Examples:

      ohpub mirror ~/oh/spotify --project 176

      ohpub mirror /data/oh --project 176 --dry-run

      ohpub mirror /data/oh -p 176 --format jsonl | jq -c 'select(.status=="failed")'
    """
    flt = _filter(project, user, datatype, tag, name, since, until)
    limit = parse_size(max_size) if max_size else None
    opts = MirrorOptions(
        dest=dest,
        flt=flt,
        jobs=jobs,
        dry_run=dry_run,
        delete=delete,
        max_size=limit,
        strict=strict,
    )
    view = MirrorView(
        fmt=fmt.value,
        quiet=settings.quiet,
        bars=sys.stderr.isatty() and not dry_run,
        out=sys.stdout,
    )
    with _client(jobs) as client:
        mirror = Mirror(client, opts, view)
        try:
            summary = mirror.run()
        finally:
            view.close()
    for w in summary.warnings:
        log.debug("warning: %s", w)
    if not settings.quiet:
        print(summary_line(summary, dry_run=dry_run), file=sys.stderr, flush=True)
    return summary.exit_code


@app.command("fetch")
def fetch_cmd(
    ids: Annotated[list[int], typer.Argument(min=1, help="File ids to download.")],
    directory: Annotated[
        Path, typer.Option("--dir", "-d", help="Directory to write <basename> into.")
    ] = Path("."),
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Write the one file here; '-' streams to stdout."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Overwrite an existing different file at the target.")
    ] = False,
) -> int:
    """Download single files by id (resumable and verified, like mirror).

    Examples:

      ohpub fetch 57602983 -o - | jq .

      ohpub fetch 57602983 57588874 -d downloads/
    """
    if output is not None and len(ids) != 1:
        raise UsageError("--output takes exactly one file id", hint="use --dir for several")
    with _client() as client:
        return fetch_files(
            client,
            ids,
            directory=directory,
            output=output,
            force=force,
            on_message=lambda m: None if settings.quiet else print(m, file=sys.stderr),
            on_result=_print_fetch_result,
        )


def _print_fetch_result(r: FetchResult) -> None:
    if r.error:
        print_error(r.error, r.hint)
    elif not settings.quiet:
        print(f"ohpub: {r.target}: {r.status} ({r.bytes} bytes)", file=sys.stderr, flush=True)


@app.command("verify")
def verify_cmd(
    dest: Annotated[Path, typer.Argument(help="A mirror made by 'ohpub mirror'.")],
    fmt: Annotated[
        MirrorFormat,
        typer.Option("--format", "-f", help="text: problems and a summary; jsonl: every file."),
    ] = MirrorFormat.text,
) -> int:
    """Re-hash every tracked file against the state; list untracked files too.

    Exit 0 when every tracked file is ok, 1 when anything is modified, missing or
    untracked.

    Example:

      ohpub verify /data/oh --format jsonl | jq -c 'select(.status!="ok")'
    """
    report = verify_mirror(dest, on_record=_verify_printer(fmt.value))
    if not settings.quiet:
        print(report.summary(), file=sys.stderr, flush=True)
    return report.exit_code


def _verify_printer(fmt: str) -> Callable[[dict[str, Any]], None]:
    import json

    def emit(rec: dict[str, Any]) -> None:
        if fmt == "jsonl":
            sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        elif rec["status"] != "ok" and not settings.quiet:
            print(f"{rec['status']}: {rec['path']}", file=sys.stdout, flush=True)

    return emit


@app.command("status")
def status_cmd(
    dest: Annotated[Path, typer.Argument(help="A mirror made by 'ohpub mirror'.")],
    max_age: Annotated[
        str | None,
        typer.Option(help="Exit 1 when the last complete run ended longer ago (e.g. 26h, 2d)."),
    ] = None,
    fmt: Annotated[
        StatusFormat, typer.Option("--format", "-f", help="text or json.")
    ] = StatusFormat.text,
) -> int:
    """What the mirror holds and how its last runs ended (for monitoring cron mirrors).

    Example:

      ohpub status /data/oh --max-age 26h || echo "mirror is stale"
    """
    age = parse_duration(max_age) if max_age else None
    st = mirror_status(dest, max_age=age)
    sys.stdout.write(st.render(fmt.value))
    sys.stdout.flush()
    return st.exit_code


def parse_duration(value: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", value)
    if not m:
        raise UsageError(f"invalid duration {value!r}", hint="use e.g. 90m, 26h or 2d")
    mult = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    return float(m.group(1)) * mult


def _on_sigterm(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    with contextlib.suppress(AttributeError, ValueError):
        # A file-size limit (ulimit -f) must be an EFBIG error we can report, not a kill.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, _on_sigterm)
    app(args=list(argv) if argv is not None else None, prog_name="ohpub")


__all__ = ["app", "main", "FORMATS"]
