"""Generate the bash, zsh and fish completion scripts in completions/ from the CLI.

    python scripts/gen_completions.py            # rewrite completions/
    python scripts/gen_completions.py --check    # exit 1 if completions/ is stale
    python scripts/gen_completions.py --out DIR  # write into DIR instead

The scripts are static (no Python runs at <Tab>): they list the commands, every option
of every command (with the values it takes: choices, files or directories) and the
positional arguments, all read from the click command tree that typer builds for
``ohpub.cli.main``. The output depends on nothing but that tree, so it is deterministic,
and tests/test_cli_ux.py fails when the checked-in scripts no longer match it.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import pathlib
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import typer.main

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ohpub.cli.main import app  # noqa: E402

PROG = "ohpub"
FILES = {"bash": "ohpub.bash", "zsh": "_ohpub", "fish": "ohpub.fish"}
HEADER = "Generated from the ohpub CLI by scripts/gen_completions.py; do not edit."
_DIR_PARAMS = {"dest"}
"""Parameters that name a directory (DEST may not exist yet, so it is not typed so; it is a
plain string, since it may also be an s3:// URL, which typer's Path would mangle)."""
_FILE_PARAMS = {"output"}
"""String parameters that name a file ('-o -' is stdout)."""


@dataclass
class Param:
    names: list[str]  # option spellings (long first) or [METAVAR] for an argument
    help: str
    negatives: list[str] = field(default_factory=list)  # --no-delete
    takes_value: bool = False
    multiple: bool = False
    kind: str = "any"  # any | choice | dir | file
    choices: list[str] = field(default_factory=list)
    metavar: str = "VALUE"

    @property
    def longs(self) -> list[str]:
        return [n for n in self.names if n.startswith("--")]

    @property
    def shorts(self) -> list[str]:
        return [n for n in self.names if not n.startswith("--")]


@dataclass
class Command:
    name: str
    help: str
    options: list[Param]
    args: list[Param]


def _one_line(text: str | None) -> str:
    """The first sentence, on one line, without characters the shells would choke on
    (single quotes are escaped per shell when written)."""
    text = " ".join((text or "").split("\n\n")[0].split())
    m = re.match(r"(.+?\.)(?=\s+[A-Z]|$)", text)
    text = (m.group(1) if m else text).rstrip(".")
    text = text.replace("[", "(").replace("]", ")")
    return re.sub(r"[\"`$\\]", "", text)


def _zq(text: str) -> str:
    """For inside a single-quoted zsh word."""
    return text.replace("'", "'\\''")


def _fq(text: str) -> str:
    """For inside a single-quoted fish word."""
    return text.replace("'", "\\'")


def _param(p: Any) -> Param:
    desc = getattr(p, "type_descriptor", None)
    ann = getattr(desc, "annotation", None)
    info = getattr(desc, "parameter_info", None)
    is_arg = p.param_type_name == "argument"
    out = Param(
        names=[p.metavar or p.name.upper()] if is_arg else sorted(p.opts, key=_long_first),
        help=_one_line(p.help),
        negatives=list(p.secondary_opts),
        takes_value=is_arg or not p.is_flag,
        multiple=bool(p.multiple) or p.nargs == -1,
        metavar=p.metavar or p.name.upper(),
    )
    if not re.fullmatch(r"[A-Z_.]+", out.metavar):  # e.g. [text|jsonl]
        out.metavar = out.longs[0][2:].upper() if out.longs else "VALUE"
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        out.kind, out.choices = "choice", [str(e.value) for e in ann]
    elif ann is pathlib.Path or p.name in _DIR_PARAMS:
        dir_only = getattr(info, "file_okay", True) is False or p.name in _DIR_PARAMS
        out.kind = "dir" if dir_only else "file"
    elif p.name in _FILE_PARAMS:
        out.kind = "file"
    return out


def _long_first(opt: str) -> tuple[int, str]:
    return (0 if opt.startswith("--") else 1, opt)


def _help_option() -> Param:
    return Param(names=["--help", "-h"], help="Show the help and exit")


def read_cli() -> tuple[list[Param], list[Command]]:
    """The global options and the commands, in the order the CLI declares them."""
    group: Any = typer.main.get_command(app)
    glob = [_param(p) for p in group.params if not p.hidden] + [_help_option()]
    cmds = []
    for name, cmd in group.commands.items():
        if cmd.hidden:
            continue
        params = [p for p in cmd.params if not getattr(p, "hidden", False)]
        cmds.append(
            Command(
                name=name,
                help=_one_line(cmd.help),
                # Global options are accepted after the command too (ohpub list -q).
                options=[_param(p) for p in params if p.param_type_name == "option"]
                + [_help_option()]
                + [_param(p) for p in group.params if not p.hidden],
                args=[_param(p) for p in params if p.param_type_name == "argument"],
            )
        )
    names = [c.name for c in cmds]
    for c in cmds:  # 'ohpub help COMMAND' completes the command names
        for a in c.args:
            if a.names == ["COMMAND"]:
                a.kind, a.choices = "choice", names
    return glob, cmds


# -- bash -------------------------------------------------------------------------------------


def _bash_value(p: Param) -> str:
    if p.kind == "choice":
        return f'COMPREPLY=($(compgen -W "{" ".join(p.choices)}" -- "$cur"))'
    if p.kind == "dir":
        return 'compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -d -- "$cur")'
    if p.kind == "file":
        return 'compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur")'
    return "COMPREPLY=()"


def bash(glob: list[Param], cmds: list[Command]) -> str:
    valued_glob = [n for p in glob if p.takes_value for n in p.names]
    lines = [
        f"# bash completion for {PROG}. {HEADER}",
        f"# Install: source it from ~/.bashrc, or copy it to "
        f"~/.local/share/bash-completion/completions/{PROG}",
        "",
        f"_{PROG}() {{",
        "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}",
        "    # --option=value: bash splits the word at '='",
        '    if [[ $cur == "=" ]]; then',
        '        cur=""',
        '    elif [[ $prev == "=" && $COMP_CWORD -ge 2 ]]; then',
        "        prev=${COMP_WORDS[COMP_CWORD-2]}",
        "    fi",
        '    local cmd="" npos=0 skip=0 i w',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        "        w=${COMP_WORDS[i]}",
        "        if ((skip)); then",
        '            skip=0; [[ $w == "=" ]] && skip=1',
        "            continue",
        "        fi",
        "        if [[ -z $cmd ]]; then",
        "            case $w in",
        f"                {'|'.join(valued_glob)}) skip=1 ;;",
        "                -*) ;;",
        "                *) cmd=$w ;;",
        "            esac",
        "        else",
        '            case "$cmd:$w" in',
    ]
    for c in cmds:
        valued = [f"{c.name}:{n}" for p in c.options if p.takes_value for n in p.names]
        if valued:
            lines.append(f"                {'|'.join(valued)}) skip=1 ;;")
    lines += [
        "                *:-*) ;;",
        "                *) ((npos++)) ;;",
        "            esac",
        "        fi",
        "    done",
        '    case "$cmd:$prev" in',
    ]
    for p in glob:
        if p.takes_value:
            lines.append(
                f"        {'|'.join(':' + n for n in p.names)}) {_bash_value(p)}; return ;;"
            )
    for c in cmds:
        for p in c.options:
            if p.takes_value:
                pats = "|".join(f"{c.name}:{n}" for n in p.names)
                lines.append(f"        {pats}) {_bash_value(p)}; return ;;")
    lines += [
        "    esac",
        "    if [[ $cur == -* ]]; then",
        "        local opts",
        "        case $cmd in",
        f'            "") opts="{" ".join(n for p in glob for n in p.names + p.negatives)}" ;;',
    ]
    for c in cmds:
        opts = " ".join(n for p in c.options for n in p.names + p.negatives)
        lines.append(f'            {c.name}) opts="{opts}" ;;')
    lines += [
        "        esac",
        '        COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
        "        return",
        "    fi",
        '    case "$cmd:$npos" in',
        f'        ":"*) COMPREPLY=($(compgen -W "{" ".join(c.name for c in cmds)}" -- "$cur")) ;;',
    ]
    for c in cmds:
        for i, a in enumerate(c.args):
            pos = "*" if a.multiple else str(i)
            if a.kind != "any":
                lines.append(f"        {c.name}:{pos}) {_bash_value(a)} ;;")
    lines += [
        "    esac",
        "}",
        "",
        f"complete -F _{PROG} {PROG}",
        "",
    ]
    return "\n".join(lines)


# -- zsh --------------------------------------------------------------------------------------


def _zsh_action(p: Param) -> str:
    if p.kind == "choice":
        return f"({' '.join(p.choices)})"
    if p.kind == "dir":
        return "_files -/"
    if p.kind == "file":
        return "_files"
    return " "


def _zsh_option(p: Param) -> list[str]:
    desc = f"[{_zq(p.help)}]"
    if p.negatives:
        excl = f"({' '.join(p.names + p.negatives)})"
        undo = f"Turn off {p.names[0]}"
        return [f"'{excl}{n}{desc}'" for n in p.names] + [
            f"'{excl}{n}[{undo}]'" for n in p.negatives
        ]
    if p.takes_value:
        spellings = [f"{n}=" if n.startswith("--") else f"{n}+" for n in p.names]
        tail = f"{desc}:{p.metavar}:{_zsh_action(p)}"
    else:
        spellings = list(p.names)
        tail = desc
    if p.names == ["--help", "-h"] or p.names == ["--version"]:
        excl = "(- *)"
    elif p.multiple:
        excl = "*"
    else:
        excl = f"({' '.join(p.names)})"
    if len(spellings) == 1:
        return [f"'{excl}{spellings[0]}{tail}'"]
    return [f"'{excl}'{{{','.join(spellings)}}}'{tail}'"]


def zsh(glob: list[Param], cmds: list[Command]) -> str:
    lines = [
        f"#compdef {PROG}",
        f"# zsh completion for {PROG}. {HEADER}",
        f"# Install: copy it as _{PROG} into a directory on $fpath (e.g. ~/.zfunc, with",
        "# fpath+=~/.zfunc before compinit in ~/.zshrc), or source it after compinit.",
        "",
    ]
    for c in cmds:
        specs = [s for p in c.options for s in _zsh_option(p)]
        for i, a in enumerate(c.args):
            pos = "*" if a.multiple else str(i + 1)
            specs.append(f"'{pos}:{a.metavar}:{_zsh_action(a)}'")
        lines.append(f"_{PROG}_{c.name}() {{")
        lines.append("  _arguments -s -S \\")
        lines += [f"    {s} \\" for s in specs[:-1]] + [f"    {specs[-1]}", "}", ""]
    lines += [
        f"_{PROG}() {{",
        "  local curcontext=$curcontext state state_descr line ret=1",
        "  typeset -A opt_args",
        "  _arguments -C -s -S \\",
    ]
    lines += [f"    {s} \\" for p in glob for s in _zsh_option(p)]
    lines += [
        "    '1: :->command' \\",
        "    '*:: :->args' && ret=0",
        "  case $state in",
        "    command)",
        "      local -a commands=(",
    ]
    lines += [f"        '{c.name}:{_zq(c.help)}'" for c in cmds]
    lines += [
        "      )",
        f"      _describe -t commands '{PROG} command' commands && ret=0",
        "      ;;",
        "    args)",
        f"      curcontext=${{curcontext%:*:*}}:{PROG}-$words[1]:",
        "      case $words[1] in",
    ]
    lines += [f"        {c.name}) _{PROG}_{c.name} && ret=0 ;;" for c in cmds]
    lines += [
        "      esac",
        "      ;;",
        "  esac",
        "  return ret",
        "}",
        "",
        "if [[ $zsh_eval_context[-1] == loadautofunc ]]; then",
        f'  _{PROG} "$@"',
        "else",
        f"  compdef _{PROG} {PROG}",
        "fi",
        "",
    ]
    return "\n".join(lines)


# -- fish -------------------------------------------------------------------------------------


def _fish_option(cond: str, p: Param) -> list[str]:
    def flags(names: list[str]) -> str:
        return " ".join(f"-l {n[2:]}" if n.startswith("--") else f"-s {n[1:]}" for n in names)

    head = f"complete -c {PROG} -n '{cond}' {flags(p.names)}"
    p = Param(**{**p.__dict__, "help": _fq(p.help)})
    if not p.takes_value:
        out = [f"{head} -d '{p.help}'"]
        undo = f"Turn off {p.names[0]}"
        out += [f"complete -c {PROG} -n '{cond}' {flags([n])} -d '{undo}'" for n in p.negatives]
        return out
    if p.kind == "choice":
        return [f"{head} -x -a '{' '.join(p.choices)}' -d '{p.help}'"]
    if p.kind == "dir":
        return [f"{head} -x -a '(__fish_complete_directories)' -d '{p.help}'"]
    if p.kind == "file":
        return [f"{head} -r -F -d '{p.help}'"]
    return [f"{head} -x -d '{p.help}'"]


def fish(glob: list[Param], cmds: list[Command]) -> str:
    names = " ".join(c.name for c in cmds)
    top = f"not __fish_seen_subcommand_from {names}"
    lines = [
        f"# fish completion for {PROG}. {HEADER}",
        f"# Install: copy it to ~/.config/fish/completions/{PROG}.fish",
        "",
        f"complete -c {PROG} -f",
        "",
        "# global options (before the command)",
    ]
    lines += [s for p in glob for s in _fish_option(top, p)]
    lines += ["", "# commands"]
    lines += [f"complete -c {PROG} -n '{top}' -a {c.name} -d '{_fq(c.help)}'" for c in cmds]
    for c in cmds:
        cond = f"__fish_seen_subcommand_from {c.name}"
        lines += ["", f"# {PROG} {c.name}"]
        lines += [s for p in c.options for s in _fish_option(cond, p)]
        for a in c.args:
            if a.kind == "choice":
                lines.append(f"complete -c {PROG} -n '{cond}' -a '{' '.join(a.choices)}'")
            elif a.kind == "dir":
                lines.append(f"complete -c {PROG} -n '{cond}' -a '(__fish_complete_directories)'")
            elif a.kind == "file":
                lines.append(f"complete -c {PROG} -n '{cond}' -F")
    lines.append("")
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------


def generate() -> dict[str, str]:
    """File name -> content, for every shell."""
    glob, cmds = read_cli()
    return {
        FILES["bash"]: bash(glob, cmds),
        FILES["zsh"]: zsh(glob, cmds),
        FILES["fish"]: fish(glob, cmds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "completions")
    parser.add_argument("--check", action="store_true", help="exit 1 if --out is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, text in generate().items():
        path = args.out / name
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        if old == text:
            continue
        stale.append(name)
        if args.check:
            sys.stdout.writelines(
                difflib.unified_diff(
                    old.splitlines(True), text.splitlines(True), str(path), f"{name} (generated)"
                )
            )
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run: python scripts/gen_completions.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
