"""The data commands, each a few lines over ``import ohpub``: ``list``, ``mirror``,
``fetch``, ``verify``, ``status``. Importing this module registers them on the app."""

from __future__ import annotations

import contextlib
import errno
import logging
import sys
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

import ohpub
from ohpub.cli.app import (
    DEFAULTS,
    CliState,
    Interrupted,
    ReaderGone,
    _client,
    _Command,
    _state,
    app,
)
from ohpub.cli.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from ohpub.cli.options import (
    CutoffOpt,
    DestArg,
    Kind,
    ListFormat,
    MirrorFormat,
    StatusFormat,
    _FetchDirectoryOpt,
    _FetchForceOpt,
    _FetchIdsOpt,
    _FetchOutputOpt,
    _ListFmtOpt,
    _ListKindOpt,
    _ListLimitOpt,
    _ListOldLimitOpt,
    _MirrorChecksumOpt,
    _MirrorDeleteOpt,
    _MirrorDestOpt,
    _MirrorDryRunOpt,
    _MirrorFmtOpt,
    _MirrorJobsOpt,
    _MirrorMaxSizeOpt,
    _MirrorStrictOpt,
    _StatusFmtOpt,
    _StatusMaxAgeOpt,
    _VerifyFmtOpt,
    with_filters,
)
from ohpub.cli.progress import FetchLine, MirrorView, WaitLine
from ohpub.cli.render import (
    notice,
    print_error,
    print_warning,
    summary_line,
    totals_record,
    write_files,
    write_jsonl,
    write_objects,
)
from ohpub.model.config import Config
from ohpub.model.errors import IncompleteListingError, OhpubError, UsageError
from ohpub.model.filters import Filters
from ohpub.model.records import DataFile
from ohpub.model.units import parse_duration, parse_size
from ohpub.ops.fetch import FetchResult
from ohpub.ops.verify import VerifyRecord
from ohpub.remote.client import ApiClient as Client

log = logging.getLogger("ohpub")
T = TypeVar("T")


def _default_format(fmt: ListFormat | None) -> str:
    if fmt is not None:
        return fmt.value
    return "table" if sys.stdout.isatty() else "jsonl"


def _limited(items: Iterator[T], limit: int | None) -> Iterator[T]:
    return islice(items, limit) if limit is not None else items


def _source(ctx: typer.Context, name: str) -> str:
    """Where a parameter's value came from: COMMANDLINE, ENVIRONMENT, DEFAULT, ..."""
    return str(getattr(ctx.get_parameter_source(name), "name", ""))


NO_FILTERS = Filters()


def _bars_wanted(state: CliState) -> bool:
    """Live lines only for a person: stderr a terminal, and not --quiet."""
    return sys.stderr.isatty() and not state.quiet


@app.command("list", cls=_Command)
@with_filters
def list_cmd(
    ctx: typer.Context,
    kind: _ListKindOpt = Kind.files,
    filters: Filters = NO_FILTERS,
    fmt: _ListFmtOpt = None,
    limit: _ListLimitOpt = None,
    old_limit: _ListOldLimitOpt = None,
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
    state = _state(ctx)
    out_fmt = _default_format(fmt)
    if old_limit is not None:
        print_warning(
            "-n for --limit is deprecated and goes in the next release (-n is --dry-run, "
            "as in 'ohpub mirror -n'); use --limit N",
            quiet=state.quiet,
        )
        limit = old_limit if limit is None else limit
    if kind is not Kind.files:
        return _list_objects(ctx, state, kind, out_fmt, limit)
    return _list_files(state, filters, out_fmt, limit)


def _list_objects(
    ctx: typer.Context, state: CliState, kind: Kind, out_fmt: str, limit: int | None
) -> int:
    """``list projects|datatypes|members``: small lists, read whole, then written."""
    given = [f"--{n}" for n in Filters.names() if _source(ctx, n) == "COMMANDLINE"]
    if given:
        raise UsageError(f"{', '.join(given)}: file filters do not apply to 'list {kind.value}'")
    objects = {"projects": ohpub.projects, "datatypes": ohpub.datatypes}
    line = WaitLine(show=_bars_wanted(state), words=f"listing {kind.value}")
    with _client(state) as client:
        try:
            items = objects.get(kind.value, ohpub.members)(client=client)
        finally:
            line.close()
        write_objects(_limited(iter(items), limit), kind.value, out_fmt, sys.stdout)
    return EXIT_OK


def _list_files(state: CliState, filters: Filters, out_fmt: str, limit: int | None) -> int:
    """``list`` (files): records stream as pages arrive; an incomplete listing is named
    on stderr after them (exit 1)."""
    failed: list[IncompleteListingError] = []
    # A table waits for every record: count them meanwhile. Records for this terminal
    # stream at once: the line only covers the wait for the first one.
    line = WaitLine(show=_bars_wanted(state), words="listing: 0 files so far")
    to_screen = sys.stdout.isatty() and out_fmt != "table"
    with _client(state) as client:
        files = ohpub.files(filters, limit=limit, client=client)
        try:
            counted = _counted(_until_incomplete(files, failed), line, to_screen)
            write_files(counted, out_fmt, sys.stdout)
        finally:
            line.close()
    for exc in failed:  # after the records, so json output stays one valid array
        print_error(exc.message, exc.hint)
    return EXIT_FAILURE if failed else EXIT_OK


def _counted(files: Iterator[DataFile], line: WaitLine, to_screen: bool) -> Iterator[DataFile]:
    """The files, counted on the live line (closed at the first record for the screen,
    and before a table is printed)."""
    try:
        for n, f in enumerate(files, 1):
            if to_screen:
                line.close()
            line.news(f"listing: {n} files so far")
            yield f
    finally:
        line.close()


def _until_incomplete(
    files: Iterator[DataFile], failed: list[IncompleteListingError]
) -> Iterator[DataFile]:
    """The files; an incomplete listing (raised at its end) is kept for after the output."""
    try:
        yield from files
    except IncompleteListingError as exc:
        failed.append(exc)


_MirrorWorkDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--work-dir",
        envvar="OHPUB_WORK_DIR",
        show_default=False,
        help="For an s3:// DEST: where partials and the state's working copy live "
        "(default: $XDG_CACHE_HOME/ohpub/<bucket--prefix>).",
    ),
]


@app.command("mirror", cls=_Command)
@with_filters
def mirror_cmd(
    ctx: typer.Context,
    dest: _MirrorDestOpt,
    filters: Filters = NO_FILTERS,
    jobs: _MirrorJobsOpt = DEFAULTS.jobs,
    dry_run: _MirrorDryRunOpt = False,
    delete: _MirrorDeleteOpt = False,
    max_size: _MirrorMaxSizeOpt = None,
    strict: _MirrorStrictOpt = False,
    checksum: _MirrorChecksumOpt = False,
    fmt: _MirrorFmtOpt = MirrorFormat.text,
    cutoff: CutoffOpt = None,
    work_dir: _MirrorWorkDirOpt = None,
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
      # crontab, 3:17 nightly: errors only, a log file, ohpub's full path
      17 3 * * * ~/.local/bin/ohpub -q --log-file ~/oh.log mirror ~/oh -p 176
    """
    state = _state(ctx)
    config = state.config.with_(jobs=jobs, range_cutoff=_cutoff(cutoff, state.config))
    view = _mirror_view(state, fmt, dest, dry_run=dry_run, unfiltered=not filters.given())
    with _client(state, config) as client, _watching(view):
        result = ohpub.mirror(
            dest,
            filters,
            jobs=jobs,
            dry_run=dry_run,
            delete=delete,
            max_size=max_size,
            strict=strict,
            checksum=checksum,
            progress=view.on_event,
            client=client,
            keep_results=False,
            work_dir=work_dir,
        )
    if dry_run and fmt is MirrorFormat.jsonl:
        write_jsonl(totals_record(result), sys.stdout)
    _mirror_summary(result, dry_run=dry_run, quiet=state.quiet)
    return EXIT_OK if result.ok else EXIT_FAILURE


def _mirror_view(
    state: CliState, fmt: MirrorFormat, dest: str, *, dry_run: bool, unfiltered: bool
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

    screen_out = output == "-" and sys.stdout.isatty()
    line = FetchLine(show=_bars_wanted(state) and not screen_out, first=ids[0])

    def show(r: FetchResult) -> None:
        line.close()  # the results come once every file is done
        if r.error:
            print_error(r.error, r.hint)
        else:
            notice(f"ohpub: {r.target}: {r.status} ({r.bytes} bytes)", quiet=state.quiet)

    with _client(state, config) as client:
        try:
            if output == "-":
                return _fetch_to_stdout(ids[0], client, line, quiet=state.quiet)
            results = ohpub.fetch_many(
                ids,
                directory,
                output=output,
                force=force,
                progress=line.on_event,
                on_result=show,
                client=client,
            )
        finally:
            line.close()
    if any(r.usage for r in results):
        return EXIT_USAGE
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILURE


def _fetch_to_stdout(file_id: int, client: Client, line: FetchLine, *, quiet: bool) -> int:
    names: list[DataFile] = []

    def watch(e: ohpub.MirrorEvent) -> None:
        if e.kind == "started" and e.file is not None:
            names.append(e.file)
        line.on_event(e)

    try:
        size = ohpub.stream(file_id, sys.stdout.buffer, progress=watch, client=client)
    except OhpubError as exc:
        if getattr(exc, "errno", None) == errno.EPIPE:
            raise ReaderGone() from None  # '| head -c 10': the reader has had enough
        raise
    line.close()
    name = f" ({names[0].basename})" if names else ""
    notice(f"ohpub: {file_id}{name}: {size} bytes to stdout, verified", quiet=quiet)
    return EXIT_OK


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


def _verify_printer(fmt: str) -> Callable[[VerifyRecord], None]:
    def emit(rec: VerifyRecord) -> None:
        if fmt == "jsonl":
            write_jsonl(rec.to_dict(), sys.stdout)
        elif rec.status != "ok":
            print(f"{rec.status}: {rec.path.as_posix()}", file=sys.stdout, flush=True)

    return emit


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
      ohpub status ~/spotify --max-age 26h > /dev/null  # stale: exit 1, and why
      ohpub status ~/spotify -f json | jq .last_complete_run.ended_at
    """
    st = ohpub.status(dest, max_age=parse_duration(max_age) if max_age else None)
    sys.stdout.write(st.to_json() if fmt is StatusFormat.json else st.text)
    sys.stdout.flush()
    if st.stale:
        # The report is data (stdout); the verdict is an error a monitor must not lose
        # with '> /dev/null': cron mails stderr.
        print_error(f"{dest} is stale: {st.stale_reason}")
        return EXIT_FAILURE
    return EXIT_OK
