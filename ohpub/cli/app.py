"""The ``ohpub`` command line's frame: the Typer app, its global options, and the one error
handler (the data commands are in ``cli.commands``, their options in ``cli.options``,
``help`` and ``completion`` in ``cli.meta``, the entry point in ``cli.main``).

Every command is thin: the work happens in the library (``import ohpub``); the CLI only
turns options into a ``Config`` and calls, and results into output. Errors become one
line on stderr (``ohpub: error: ...``) and a documented exit code: 0 ok, 1 failure, 2
usage or bad input, 3 DEST locked, 130 interrupted (143 by SIGTERM).

Conventions people expect from a command line: ``ohpub help CMD``, ``-V``, ``ohpub
completion SHELL``, and one rule for a reader that goes away (``| head``): stop quietly,
exit 0. Global options after the command, suggestions for misspellings and errors in
ohpub's own words are in ````cli.conventions``."""

from __future__ import annotations

import logging
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from ohpub.cli import interrupts
from ohpub.cli.conventions import (
    arg_name,
    format_params,
    hoist_globals,
    usage_error,
    warn_unknown_env,
)
from ohpub.cli.exits import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, exit_code_for
from ohpub.cli.render import (
    configure_logging,
    log_only,
    print_error,
    print_warning,
    silence_stdout,
    write_stderr,
)
from ohpub.model.config import Config, RetryPolicy
from ohpub.model.errors import OhpubError, UsageError
from ohpub.model.units import parse_seconds
from ohpub.model.version import __version__
from ohpub.remote.client import ApiClient as Client
from ohpub.remote.http import redact

if TYPE_CHECKING:
    import requests

log = logging.getLogger("ohpub")
T = TypeVar("T")

DEFAULTS = Config()
"""The library's defaults, shown in --help; the CLI writes none of its own."""

HELP_WIDTH = 120
"""The widest help text (a wider terminal gets this width: long lines read badly)."""

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
        interrupts.begin()
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
        code = interrupts.exit_code(code)  # after a signal, never 0
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
    # Help as wide as the terminal (up to HELP_WIDTH): click's default stops at 80 and
    # cuts every command's summary there, even on a 120-column terminal.
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": HELP_WIDTH},
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
        return interrupts.exit_code()
    except Interrupted as exc:
        _say_interrupted(exc.detail)
        return interrupts.exit_code()
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
        if interrupts.signalled():  # cut short by Ctrl-C (say, inside a lazy import)
            _say_interrupted("interrupted")
            return interrupts.exit_code()
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
    int | None,
    typer.Option(
        envvar="OHPUB_PAGE_SIZE",
        min=1,
        hidden=True,
        metavar="N",
        help="Most records in one page of the listing walk (default: as the server allows).",
    ),
]
_MainServerTimeLimitOpt = Annotated[
    float,
    typer.Option(
        envvar="OHPUB_SERVER_TIME_LIMIT",
        min=0.1,
        hidden=True,
        metavar="SECONDS",
        help="Seconds the server lets one request run; listing requests are sized to a "
        "third of it.",
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
    server_time_limit: _MainServerTimeLimitOpt = DEFAULTS.server_time_limit,
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
    3 destination locked by another run, 130 interrupted (143: SIGTERM). 'ohpub help COMMAND'
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
        server_time_limit=server_time_limit,
        retry=retry,
        cancel=interrupts.token(),
    )
    ctx.obj = CliState(config=config, quiet=quiet, verbose=verbose)
    configure_logging(verbose=verbose, quiet=quiet, log_file=log_file)
    log_only(f"start (ohpub {__version__}, server {config.base_url}): ohpub {shlex.join(argv)}")
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
        client.sessions.add_hook(_log_response)
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



__all__ = ["app", "CliState"]
