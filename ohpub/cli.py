"""The ``ohpub`` command line: parse, call the library, render, map errors to exit codes.

Every command is thin: the work happens in ``api``, ``mirror``, ``fetch`` and
``verify``; this module only turns options into a ``Config`` and calls, and results
into output. Errors become one line on stderr (``ohpub: error: ...``) and a documented
exit code: 0 ok, 1 failure, 2 usage or bad input, 3 DEST locked, 130 interrupted.

Conventions people expect from a command line: ``ohpub help CMD``, ``-V``,
``ohpub completion SHELL``, and one rule for a reader that goes away (``| head``): stop
quietly, exit 0. Global options after the command, suggestions for misspellings and
errors in ohpub's own words are in ``ohpub.conventions``.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.resources
import json
import logging
import shlex
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

import ohpub
from ohpub import __version__
from ohpub.api import Client
from ohpub.config import Config, RetryPolicy
from ohpub.conventions import (
    arg_name,
    closest,
    format_params,
    hoist_globals,
    usage_error,
    warn_unknown_env,
)
from ohpub.errors import IncompleteListingError, OhpubError, UsageError
from ohpub.exits import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, exit_code_for
from ohpub.fetching import FetchResult
from ohpub.http import redact
from ohpub.output import (
    FORMATS,
    MirrorView,
    configure_logging,
    log_only,
    notice,
    print_error,
    print_warning,
    silence_stdout,
    summary_line,
    totals_record,
    write_files,
    write_jsonl,
    write_objects,
    write_stderr,
)
from ohpub.records import DataFile
from ohpub.units import human_bytes, parse_duration, parse_seconds, parse_size

if TYPE_CHECKING:
    import requests

log = logging.getLogger("ohpub")
T = TypeVar("T")

DEFAULTS = Config()
"""The library's defaults, shown in --help; the CLI writes none of its own."""

# Typer bundles its own click; its exception base is reached through a public class.
_ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


class ReaderGone(Exception):
    """stdout's reader went away (``ohpub list | head -1``): stop quietly, exit 0."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM, with what was done: ``interrupted: 12 downloaded, ...``."""

    def __init__(self, detail: str = "interrupted") -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass
class CliState:
    """What the global options decided, passed to every command as ``ctx.obj``."""

    config: Config = field(default_factory=Config)
    quiet: bool = False
    verbose: bool = False


class _Command(TyperCommand):
    """Help in ohpub's words: ``DEST``, ``[KIND]``, ``ID...`` (not ``{DEST}`` or
    ``ID <list[int]>``)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if p.param_type_name == "argument":
                pieces.append(arg_name(p))
            else:
                pieces.extend(p.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        format_params(self, ctx, formatter)


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
        argv = list(args) if args is not None else sys.argv[1:]
        configure_logging(verbose=False, quiet=False, log_file=None)
        code = _guarded(
            lambda: super(_Group, self).main(
                args=hoist_globals(self, argv),
                prog_name=prog_name or "ohpub",
                complete_var=complete_var,
                standalone_mode=False,
                obj=argv,
                **extra,
            )
        )
        log_only(f"exit {code}")
        if standalone_mode:
            sys.exit(code)
        return code

    def format_options(self, ctx: Any, formatter: Any) -> None:
        format_params(self, ctx, formatter)
        self.format_commands(ctx, formatter)

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        """Parsing runs eager options (``--help``, ``-V``), which write to stdout too."""
        try:
            return super().make_context(*args, **kwargs)
        except BrokenPipeError:
            raise ReaderGone() from None

    def invoke(self, ctx: Any) -> Any:
        """One rule for every command: a closed stdout ends the command quietly (exit 0),
        Ctrl-C says what was done (exit 130). Typer would turn both into other codes."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise ReaderGone() from None
        except KeyboardInterrupt:
            raise Interrupted() from None


app = typer.Typer(
    cls=_Group,
    name="ohpub",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help (like git, rclone, gh): compact on 80 columns, examples kept verbatim.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _guarded(call: Callable[[], Any]) -> int:
    """Run the command; turn every failure into one stderr line and an exit code."""
    try:
        rv = call()
        if rv == EXIT_INTERRUPTED:
            # Typer turns a KeyboardInterrupt outside a command into Exit(130) itself.
            _say_interrupted("interrupted")
        return rv if isinstance(rv, int) else 0
    except OhpubError as exc:
        _log_traceback()
        print_error(redact(exc.message), exc.hint)
        return exit_code_for(exc)
    except _ClickException as exc:
        return usage_error(exc)
    except (KeyboardInterrupt, typer.Abort):
        _say_interrupted("interrupted")
        return EXIT_INTERRUPTED
    except Interrupted as exc:
        _say_interrupted(exc.detail)
        return EXIT_INTERRUPTED
    except (ReaderGone, BrokenPipeError):
        silence_stdout()
        log_only("stdout closed by its reader; stopped")
        return EXIT_OK
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


def _say_interrupted(detail: str) -> None:
    write_stderr(f"ohpub: {detail}")
    log_only(detail, logging.WARNING)


def _log_traceback() -> None:
    """With --verbose: the traceback on stderr (and in the log file), keys redacted."""
    log.debug("%s", traceback.format_exc().rstrip())


def _version(value: bool) -> None:
    if value:
        print(f"ohpub {__version__}")
        raise typer.Exit(0)


_MainBaseUrlOpt = Annotated[
    str,
    typer.Option(
        "--base-url",
        envvar="OHPUB_BASE_URL",
        metavar="URL",
        help="Open Humans server to talk to.",
    ),
]
_MainVerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        envvar="OHPUB_VERBOSE",
        help="Also log every HTTP request and every file's result (keys redacted).",
    ),
]
_MainQuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        envvar="OHPUB_QUIET",
        help="Print errors only: no bars, warnings, retries or summary (the log file gets all).",
    ),
]
_MainLogFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--log-file",
        envvar="OHPUB_LOG_FILE",
        metavar="PATH",
        dir_okay=False,
        help="Append a plain-text log to PATH (timestamps; no colour, no bars).",
    ),
]
_MainTimeoutOpt = Annotated[
    float,
    typer.Option(
        envvar="OHPUB_TIMEOUT",
        min=0.1,
        metavar="SECONDS",
        help="Longest wait for any one answer: to connect (at most "
        f"{DEFAULTS.connect_timeout:g} s) and for each read of a response. A request "
        "that times out is retried (--retries, within --retry-budget).",
    ),
]
_MainApiConcurrencyOpt = Annotated[
    int,
    typer.Option(
        envvar="OHPUB_API_CONCURRENCY",
        min=1,
        max=32,
        metavar="N",
        help="Requests in flight to Open Humans itself (listing, keys).",
    ),
]
_MainPageSizeOpt = Annotated[
    int,
    typer.Option(
        envvar="OHPUB_PAGE_SIZE", min=1, hidden=True, metavar="N", help="Listing page size."
    ),
]
_MainRetriesOpt = Annotated[
    int,
    typer.Option(
        envvar="OHPUB_RETRIES",
        min=1,
        max=50,
        metavar="N",
        help="Attempts per request without progress before giving up.",
    ),
]
_MainRetryBudgetOpt = Annotated[
    str | None,
    typer.Option(
        envvar="OHPUB_RETRY_BUDGET",
        metavar="SECONDS",
        help="Longest time one request may spend failing and waiting to retry since "
        f"it last made progress (default {DEFAULTS.retry.budget:g}; 90, 90s, 2m).",
        show_default=False,
    ),
]
_MainRetryBaseOpt = Annotated[
    str | None,
    typer.Option(
        envvar="OHPUB_RETRY_BASE",
        metavar="SECONDS",
        hidden=True,
        help=f"First backoff before jitter (default {DEFAULTS.retry.base:g}); doubles.",
    ),
]
_MainRetryCapOpt = Annotated[
    str | None,
    typer.Option(
        envvar="OHPUB_RETRY_CAP",
        metavar="SECONDS",
        hidden=True,
        help=f"Longest single backoff (default {DEFAULTS.retry.cap:g}).",
    ),
]
_MainVersionOpt = Annotated[
    bool,
    typer.Option(
        "--version",
        "-V",
        callback=_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
]


@app.callback()
def _main(
    ctx: typer.Context,
    base_url: _MainBaseUrlOpt = DEFAULTS.base_url,
    verbose: _MainVerboseOpt = False,
    quiet: _MainQuietOpt = False,
    log_file: _MainLogFileOpt = None,
    timeout: _MainTimeoutOpt = DEFAULTS.timeout,
    api_concurrency: _MainApiConcurrencyOpt = DEFAULTS.api_concurrency,
    page_size: _MainPageSizeOpt = DEFAULTS.page_size,
    retries: _MainRetriesOpt = DEFAULTS.retry.attempts,
    retry_budget: _MainRetryBudgetOpt = None,
    retry_base: _MainRetryBaseOpt = None,
    retry_cap: _MainRetryCapOpt = None,
    version: _MainVersionOpt = False,
) -> None:
    """Download and mirror the public data files of Open Humans.

    Global options go before or after the command; every option can also be set by
    an environment variable, shown as [env var: ...] (OHPUB_<OPTION>; --format is
    OHPUB_<COMMAND>_FORMAT). Exit codes: 0 ok, 1 failure, 2 usage or bad input,
    3 destination locked by another run, 130 interrupted. 'ohpub help COMMAND'
    shows the help of one command.

    Examples:

    \b
      ohpub list projects
      ohpub mirror ~/spotify --project 176
      ohpub --quiet --log-file ~/spotify.log mirror ~/spotify -p 176
    """
    argv = ctx.obj if isinstance(ctx.obj, list) else []
    if verbose and quiet:
        verbose, quiet = _one_of_verbose_quiet(ctx)
    timing = {
        name: parse_seconds(value)
        for name, value in (("base", retry_base), ("cap", retry_cap), ("budget", retry_budget))
        if value
    }
    retry = RetryPolicy(attempts=retries, **timing)
    config = DEFAULTS.with_(
        base_url=base_url,
        timeout=timeout,
        connect_timeout=min(DEFAULTS.connect_timeout, timeout),
        api_concurrency=api_concurrency,
        page_size=page_size,
        retry=retry,
    )
    ctx.obj = CliState(config=config, quiet=quiet, verbose=verbose)
    configure_logging(verbose=verbose, quiet=quiet, log_file=log_file)
    log_only(f"start (ohpub {__version__}): ohpub {shlex.join(argv)}")
    warn_unknown_env(ctx.command)


def _one_of_verbose_quiet(ctx: typer.Context) -> tuple[bool, bool]:
    """Both set: the command line beats the environment; both on one of them is an error."""
    sources = {name: getattr(ctx.get_parameter_source(name), "name", "") for name in _VQ}
    if sources["verbose"] == sources["quiet"]:
        raise UsageError("--verbose and --quiet exclude each other")
    return sources["verbose"] == "COMMANDLINE", sources["quiet"] == "COMMANDLINE"


_VQ = ("verbose", "quiet")


def _state(ctx: typer.Context) -> CliState:
    state = ctx.find_object(CliState)
    return state if state is not None else CliState()


def _client(state: CliState, config: Config | None = None) -> Client:
    """A Client built from the Config (the one place options meet the library)."""
    cfg = config or state.config
    client = Client(config=cfg, on_warning=lambda m: print_warning(m, quiet=state.quiet))
    if state.verbose:
        client.session.hooks["response"].append(_log_response)
    return client


def _log_response(resp: requests.Response, *args: Any, **kwargs: Any) -> None:
    """--verbose: one line per HTTP response (redirect hops included), keys redacted."""
    req = resp.request
    extra = f" range {req.headers['Range']}" if "Range" in req.headers else ""
    log.debug(
        "%s %s%s -> %s in %.0f ms",
        req.method,
        redact(req.url or ""),
        extra,
        resp.status_code,
        resp.elapsed.total_seconds() * 1000,
    )


# -- option parsing helpers ---------------------------------------------------------------


# Filters (list and mirror). The env var of a repeatable filter takes space-separated values.
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
        help="Fetch files of at least SIZE as parallel ranges over several connections "
        f"(default {human_bytes(DEFAULTS.range_cutoff)}: {DEFAULTS.range_cutoff // 2**20}M).",
    ),
]
_FILTERS = ("project", "user", "datatype", "tag", "name", "since", "until")


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

DestArg = Annotated[
    Path,
    typer.Argument(
        envvar="OHPUB_DEST",
        metavar="DEST",
        show_default=False,
        help="The mirror directory (created by the first 'ohpub mirror').",
    ),
]


def _source(ctx: typer.Context, name: str) -> str:
    """Where a parameter's value came from: COMMANDLINE, ENVIRONMENT, DEFAULT, ..."""
    return str(getattr(ctx.get_parameter_source(name), "name", ""))


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
        "-n",
        min=0,
        envvar="OHPUB_LIMIT",
        metavar="N",
        help="Stop after N records (and fetch no more pages).",
    ),
]


@app.command("list", cls=_Command)
def list_cmd(
    ctx: typer.Context,
    kind: _ListKindOpt = Kind.files,
    project: ProjectOpt = None,
    user: UserOpt = None,
    datatype: DatatypeOpt = None,
    tag: TagOpt = None,
    name: NameOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    fmt: _ListFmtOpt = None,
    limit: _ListLimitOpt = None,
) -> int:
    """List public data files (default), projects, datatypes or members.

    Filters go into the request path and are checked again on every record, because
    the server ignores query filters. json and jsonl keep every field as the server
    sent it and add project_id, datatype_ids and username; records stream as pages
    arrive. Exit 1 when the listing stayed incomplete or had malformed records
    (named on stderr).

    Examples:

    \b
      ohpub list --project 176
      ohpub list -p 176 -f jsonl | jq -r '[.id, .basename] | @tsv'
      ohpub list --tag spotify -f jsonl | jq -r .download_url
    """
    out_fmt = _default_format(fmt)
    if kind is not Kind.files:
        given = [f"--{n}" for n in _FILTERS if _source(ctx, n) == "COMMANDLINE"]
        if given:
            raise UsageError(
                f"{', '.join(given)}: file filters do not apply to 'list {kind.value}'"
            )
        objects = {"projects": ohpub.projects, "datatypes": ohpub.datatypes}
        with _client(_state(ctx)) as client:
            items = objects.get(kind.value, ohpub.members)(client=client)
            write_objects(_limited(items, limit), kind.value, out_fmt, sys.stdout)
        return EXIT_OK
    failed: list[IncompleteListingError] = []
    with _client(_state(ctx)) as client:
        files = ohpub.files(
            project=project,
            user=user,
            datatype=datatype,
            tag=tag,
            name=name,
            since=since,
            until=until,
            limit=limit,
            client=client,
        )
        write_files(_until_incomplete(files, failed), out_fmt, sys.stdout)
    for exc in failed:  # after the records, so json output stays one valid array
        print_error(exc.message, exc.hint)
    return EXIT_FAILURE if failed else EXIT_OK


def _until_incomplete(
    files: Iterator[DataFile], failed: list[IncompleteListingError]
) -> Iterator[DataFile]:
    """The files; an incomplete listing (raised at its end) is kept for after the output."""
    try:
        yield from files
    except IncompleteListingError as exc:
        failed.append(exc)


_MirrorDestOpt = Annotated[
    Path,
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


@app.command("mirror", cls=_Command)
def mirror_cmd(
    ctx: typer.Context,
    dest: _MirrorDestOpt,
    project: ProjectOpt = None,
    user: UserOpt = None,
    datatype: DatatypeOpt = None,
    tag: TagOpt = None,
    name: NameOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    jobs: _MirrorJobsOpt = DEFAULTS.jobs,
    dry_run: _MirrorDryRunOpt = False,
    delete: _MirrorDeleteOpt = False,
    max_size: _MirrorMaxSizeOpt = None,
    strict: _MirrorStrictOpt = False,
    checksum: _MirrorChecksumOpt = False,
    fmt: _MirrorFmtOpt = MirrorFormat.text,
    cutoff: CutoffOpt = None,
) -> int:
    """Mirror public files into DEST/<username>/<project id>/<name>, resumably.

    Files already present and unchanged cost no download; interrupted downloads
    resume; a file appears at its final path only when complete and verified.
    Exit 0 when every file in scope is present and verified, 1 otherwise, 3 when
    another run holds DEST (so overlapping cron runs are safe).

    Examples:

    \b
      ohpub mirror ~/spotify --project 176
      ohpub mirror ~/spotify -p 176 --dry-run -f jsonl | tail -n 1
      # a crontab line: every night at 3:17, errors only, a log file
      17 3 * * * ohpub -q --log-file ~/spotify.log mirror ~/spotify -p 176
    """
    state = _state(ctx)
    config = state.config.with_(jobs=jobs, range_cutoff=_cutoff(cutoff, state.config))
    unfiltered = not any((project, user, datatype, tag, name, since, until))
    view = _mirror_view(state, fmt, dest, dry_run=dry_run, unfiltered=unfiltered)
    with _client(state, config) as client, _watching(view):
        result = ohpub.mirror(
            dest,
            project=project,
            user=user,
            datatype=datatype,
            tag=tag,
            name=name,
            since=since,
            until=until,
            jobs=jobs,
            dry_run=dry_run,
            delete=delete,
            max_size=max_size,
            strict=strict,
            checksum=checksum,
            progress=view.on_event,
            client=client,
            keep_results=False,
        )
    if dry_run and fmt is MirrorFormat.jsonl:
        write_jsonl(totals_record(result), sys.stdout)
    _mirror_summary(result, dry_run=dry_run, quiet=state.quiet)
    return EXIT_OK if result.ok else EXIT_FAILURE


def _mirror_view(
    state: CliState, fmt: MirrorFormat, dest: Path, *, dry_run: bool, unfiltered: bool
) -> MirrorView:
    """Records on stdout (jsonl), live lines on a terminal (not for a dry run), and, with
    no filter, a first line saying that everything public is coming."""
    return MirrorView(
        fmt=fmt.value,
        quiet=state.quiet,
        bars=sys.stderr.isatty() and not dry_run,
        out=sys.stdout,
        announce_all=str(dest) if unfiltered and not dry_run else None,
    )


@contextlib.contextmanager
def _watching(view: MirrorView) -> Iterator[None]:
    """The view closes (its lines erased) however the mirror ends; after Ctrl-C the last
    line says what was done."""
    try:
        yield
    except KeyboardInterrupt:
        view.close()
        raise Interrupted(view.counts.interrupted_text()) from None
    finally:
        view.close()


def _mirror_summary(summary: Any, *, dry_run: bool, quiet: bool) -> None:
    line = summary_line(summary, dry_run=dry_run)
    if not summary.ok and quiet:
        # Errors only, but a failed run must say why (cron mails stderr).
        for w in summary.warnings:
            print_error(w)
        print_error(f"mirror incomplete: {line}")
    else:
        notice(line, quiet=quiet)


def _cutoff(value: str | None, config: Config) -> int:
    return parse_size(value) if value else config.range_cutoff


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


@app.command("fetch", cls=_Command)
def fetch_cmd(
    ctx: typer.Context,
    ids: _FetchIdsOpt,
    directory: _FetchDirectoryOpt = Path("."),
    output: _FetchOutputOpt = None,
    force: _FetchForceOpt = False,
    cutoff: CutoffOpt = None,
) -> int:
    """Download single files by id (resumable and verified, like mirror).

    An existing file with other content at the target is never overwritten without
    --force; identical content counts as done.

    Examples:

    \b
      ohpub fetch 57602983 -o - | sha256sum
      ohpub fetch 57602983 57588874 -d downloads/
    """
    if output is not None and len(ids) != 1:
        raise UsageError("--output takes exactly one file id", hint="use --dir for several")
    state = _state(ctx)
    config = state.config.with_(range_cutoff=_cutoff(cutoff, state.config))

    def show(r: FetchResult) -> None:
        if r.error:
            print_error(r.error, r.hint)
        else:
            notice(f"ohpub: {r.target}: {r.status} ({r.bytes} bytes)", quiet=state.quiet)

    with _client(state, config) as client:
        if output == "-":
            return _fetch_to_stdout(ids[0], client, quiet=state.quiet)
        results = ohpub.fetch_many(
            ids, directory, output=output, force=force, on_result=show, client=client
        )
    if any(r.usage for r in results):
        return EXIT_USAGE
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILURE


def _fetch_to_stdout(file_id: int, client: Client, *, quiet: bool) -> int:
    try:
        size = ohpub.stream(file_id, sys.stdout.buffer, client=client)
    except OhpubError as exc:
        if getattr(exc, "errno", None) == errno.EPIPE:
            raise ReaderGone() from None  # '| head -c 10': the reader has had enough
        raise
    notice(f"ohpub: {file_id}: {size} bytes to stdout, verified", quiet=quiet)
    return EXIT_OK


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


@app.command("verify", cls=_Command)
def verify_cmd(
    ctx: typer.Context,
    dest: DestArg,
    fmt: _VerifyFmtOpt = MirrorFormat.text,
) -> int:
    """Re-hash every tracked file against the state; list untracked files too.

    Exit 0 when every tracked file is ok, 1 when any is modified or missing
    (untracked files are reported, not counted as failures).

    Examples:

    \b
      ohpub verify ~/spotify
      ohpub verify ~/spotify -f jsonl | jq -c 'select(.status != "ok")'
    """
    report = ohpub.verify(dest, on_record=_verify_printer(fmt.value), keep_records=False)
    notice(report.summary(), quiet=_state(ctx).quiet)
    return EXIT_OK if report.ok else EXIT_FAILURE


def _verify_printer(fmt: str) -> Callable[[dict[str, Any]], None]:
    def emit(rec: dict[str, Any]) -> None:
        if fmt == "jsonl":
            write_jsonl(rec, sys.stdout)
        elif rec["status"] != "ok":
            print(f"{rec['status']}: {rec['path']}", file=sys.stdout, flush=True)

    return emit


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


@app.command("status", cls=_Command)
def status_cmd(
    dest: DestArg,
    max_age: _StatusMaxAgeOpt = None,
    fmt: _StatusFmtOpt = StatusFormat.text,
) -> int:
    """What a mirror holds and how its last runs ended (for monitoring).

    Files and bytes by status, project and member; when the last run and the last
    complete run (one that listed everything in its scope) ended, and how. Reads
    only, and does not wait for a running mirror.

    Examples:

    \b
      ohpub status ~/spotify
      ohpub status ~/spotify --max-age 26h || echo "mirror is stale"
      ohpub status ~/spotify -f json | jq .last_complete_run.ended_at
    """
    st = ohpub.status(dest, max_age=parse_duration(max_age) if max_age else None)
    text = json.dumps(st.to_dict(), indent=2) + "\n" if fmt is StatusFormat.json else st.text
    sys.stdout.write(text)
    sys.stdout.flush()
    return EXIT_FAILURE if st.stale else EXIT_OK


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


COMPLETION_FILES = {"bash": "ohpub.bash", "zsh": "_ohpub", "fish": "ohpub.fish"}


@app.command("help", cls=_Command)
def help_cmd(
    ctx: typer.Context,
    command: Annotated[
        str | None,
        typer.Argument(
            metavar="COMMAND", show_default=False, help="The command to explain (default: all)."
        ),
    ] = None,
) -> None:
    """Show the help of ohpub, or of one command.

    Examples:

    \b
      ohpub help
      ohpub help mirror
    """
    group = ctx.parent.command if ctx.parent is not None else ctx.command
    parent = ctx.parent or ctx
    if command is None:
        typer.echo(group.get_help(parent))
        return
    sub = group.commands.get(command) if hasattr(group, "commands") else None
    if sub is None:
        best = closest(command, getattr(group, "commands", {}))
        raise UsageError(
            f"no command {command!r}" + (f" (did you mean {best!r}?)" if best else ""),
            hint="'ohpub help' lists the commands",
        )
    with sub.make_context(command, [], parent=parent, resilient_parsing=True) as sub_ctx:
        typer.echo(sub.get_help(sub_ctx))


@app.command("completion", cls=_Command)
def completion_cmd(
    shell: Annotated[
        Shell,
        typer.Argument(metavar="SHELL", show_default=False, help="bash, zsh or fish."),
    ],
) -> None:
    """Print the completion script for SHELL (static: no Python runs at Tab).

    Examples:

    \b
      # bash: then add 'source ~/.ohpub-completion.bash' to ~/.bashrc
      ohpub completion bash > ~/.ohpub-completion.bash
      # zsh: into a directory on $fpath
      ohpub completion zsh > _ohpub
    """
    script = importlib.resources.files("ohpub") / "completions" / COMPLETION_FILES[shell.value]
    sys.stdout.write(script.read_text(encoding="utf-8"))
    sys.stdout.flush()


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
