"""Command-line conventions, kept apart from the commands: global options accepted
after the command, suggestions for misspelled options and ``OHPUB_*`` variables, and
usage errors and help in ohpub's own words rather than click's or pydantic's.

These work on the click objects typer builds (commands, parameters, exceptions) by
their attributes only, so this module does not import typer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from ohpub.cli.exits import EXIT_USAGE
from ohpub.cli.render import print_error, print_warning, write_stderr


def hoist_globals(group: Any, args: list[str]) -> list[str]:
    """Move global options written after the command to before it, so ``ohpub list
    projects -q`` and ``ohpub mirror DEST -v`` mean ``ohpub -q list projects``.

    Stops at ``--``; a command's own options (and their values) stay where they are.
    """
    glob = _takes_value(group.params)
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        i += 2 if glob.get(args[i]) else 1
    if i >= len(args) or args[i] not in group.commands:
        return args
    local = _takes_value(group.commands[args[i]].params)
    moved: list[str] = []
    rest: list[str] = []
    k = i + 1
    while k < len(args):
        tok = args[k]
        if tok == "--":
            rest += args[k:]
            break
        name = tok.split("=", 1)[0]
        width = 2 if "=" not in tok and (local.get(name) or glob.get(name)) else 1
        if name in glob and name not in local and name not in ("-h", "--help"):
            moved += args[k : k + width]
        else:
            rest += args[k : k + width]
        k += width
    return args[:i] + moved + [args[i]] + rest


def _takes_value(params: Iterable[Any]) -> dict[str, bool]:
    """Every spelling of every option -> whether it takes a value."""
    out: dict[str, bool] = {}
    for p in params:
        if p.param_type_name != "option":
            continue
        for name in [*p.opts, *p.secondary_opts]:
            out[name] = not p.is_flag
    return out


def format_params(cmd: Any, ctx: Any, formatter: Any) -> None:
    """The Arguments and Options sections, with argument names and ranges in words."""
    args, opts = [], []
    for p in cmd.get_params(ctx):
        rec = p.get_help_record(ctx)
        if rec is None:
            continue
        text = _plain_range(rec[1])
        if p.param_type_name == "argument":
            args.append((arg_name(p), text))
        else:
            opts.append((rec[0], text))
    for title, rows in (("Arguments", args), ("Options", opts)):
        if rows:
            with formatter.section(title):
                formatter.write_dl(rows)


def _plain_range(text: str) -> str:
    """click's ``x>=1`` and ``1<=x<=64`` as words: ``at least 1``, ``1 to 64``."""
    text = re.sub(r"\b([\d.]+)<=x<=([\d.]+)", r"\1 to \2", text)
    text = re.sub(r"\bx>=([\d.]+)", r"at least \1", text)
    return re.sub(r"\bx<=([\d.]+)", r"at most \1", text)


def arg_name(p: Any) -> str:
    name = str(p.metavar or p.name).upper()
    if p.nargs != 1:
        name += "..."
    return name if p.required else f"[{name}]"


def usage_error(exc: Any) -> int:
    """Print a click usage error as one ``ohpub: error:`` line in plain words."""
    kind = type(exc).__name__
    if kind == "NoArgsIsHelpError":  # bare 'ohpub': the help, as click does
        write_stderr(exc.format_message())
        return EXIT_USAGE
    ctx = getattr(exc, "ctx", None)
    if kind == "NoSuchOption":
        message = _unknown_option(exc.option_name, ctx)
    elif kind == "BadParameter" and getattr(exc, "param", None) is not None:
        message = _bad_value(exc)
    elif kind == "MissingParameter" and getattr(exc, "param", None) is not None:
        message = _missing(exc)
    else:
        message = " ".join(str(exc.format_message()).split())  # one line, never tabs
    hint = f"see 'ohpub help {ctx.info_name}'" if ctx is not None and ctx.parent else None
    print_error(message, hint or "see 'ohpub help'")
    return int(getattr(exc, "exit_code", EXIT_USAGE))


def _unknown_option(option: str, ctx: Any) -> str:
    """``unknown option --qiuet (did you mean --quiet?)``: the closest spelling among the
    command's options and the global ones (accepted after the command too)."""
    names: list[str] = []
    while ctx is not None:
        names += [n for p in ctx.command.params for n in (*p.opts, *p.secondary_opts)]
        ctx = ctx.parent
    if option.startswith("--"):
        names = [n for n in names if n.startswith("--")]
    best = closest(option, names)
    return f"unknown option {option}" + (f" (did you mean {best}?)" if best else "")


_PYDANTIC_WORDS = {
    "int_parsing": "{input!r} is not a whole number",
    "float_parsing": "{input!r} is not a number",
    "bool_parsing": "{input!r} is not one of 1/0, true/false, yes/no, on/off",
    "greater_than_equal": "{input} is too small (at least {ge})",
    "less_than_equal": "{input} is too large (at most {le})",
    "greater_than": "{input} is too small (more than {gt})",
    "less_than": "{input} is too large (less than {lt})",
}


def _missing(exc: Any) -> str:
    """``missing argument SHELL (one of bash, zsh, fish)``: one line, never click's tabs."""
    p = exc.param
    if p.param_type_name == "argument":
        name = arg_name(p).strip("[]").removesuffix("...")
    else:
        name = next((o for o in p.opts if o.startswith("--")), p.name)
    extra = " ".join(str(p.get_missing_message(ctx=exc.ctx) or "").split())
    if extra.startswith("Choose from:"):
        extra = f" (one of {extra.removeprefix('Choose from:').strip()})"
    elif extra:
        extra = f" ({extra})"
    return f"missing {p.param_type_name} {name}{extra}"


def _bad_value(exc: Any) -> str:
    """``invalid value for --limit (OHPUB_LIMIT): 'x' is not a whole number``."""
    p = exc.param
    where = next((o for o in p.opts if o.startswith("--")), None)
    where = where or arg_name(p).strip("[]").removesuffix("...")
    detail = str(exc.message)
    errors = getattr(exc.__cause__, "errors", None)
    if callable(errors) and errors():
        err = errors()[0]
        value = err.get("input")
        template = _PYDANTIC_WORDS.get(err.get("type", ""))
        if template is not None:
            detail = template.format(input=value, **(err.get("ctx") or {}))
        else:
            detail = re.sub(r"^Value error, ", "", str(err.get("msg", detail))).rstrip(".")
        env = p.envvar if isinstance(p.envvar, str) else None
        if env and value is not None and str(value) in os.environ.get(env, "").split():
            where += f" (from {env})"
    return f"invalid value for {where}: {detail}"


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate nearest to ``word`` by edit distance (a swap of two neighbouring
    letters counts as one edit: ``--qiuet`` is one from ``--quiet``), if near enough."""
    best: tuple[int, str] | None = None
    for cand in dict.fromkeys(candidates):
        d = _edit_distance(word.lower(), cand.lower())
        if best is None or d < best[0]:
            best = (d, cand)
    if best is None:
        return None
    limit = max(1, min(3, len(word) // 4))
    return best[1] if best[0] <= limit else None


def _edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent transpositions)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def warn_unknown_env(group: Any) -> None:
    """A misspelled ``OHPUB_*`` variable is silently ignored by everything else; name it
    (``OHPUB_USERS`` -> did you mean ``OHPUB_USER``?). ``OHPUB_CI_*`` and
    ``OHPUB_PROPERTY_*`` belong to the test suite and are left alone."""
    known = {"OHPUB_DEST"}
    for params in [group.params, *(c.params for c in group.commands.values())]:
        known.update(p.envvar for p in params if isinstance(p.envvar, str))
    for name in sorted(os.environ):
        if not name.startswith("OHPUB_") or name in known:
            continue
        if name.startswith(("OHPUB_CI_", "OHPUB_PROPERTY_")):
            continue
        best = closest(name, known)
        hint = f"; did you mean {best}?" if best else ""
        print_warning(f"unknown environment variable {name} is ignored{hint}")


__all__ = [
    "arg_name",
    "closest",
    "format_params",
    "hoist_globals",
    "usage_error",
    "warn_unknown_env",
]
