"""The commands about ohpub itself: ``help`` and ``completion`` (registered after the
data commands, so that lists of commands put the data commands first)."""

from __future__ import annotations

import importlib.resources
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ohpub.cli.app import _Command, app
from ohpub.cli.conventions import closest
from ohpub.model.errors import UsageError


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
    sys.stdout.write(completion_script(shell.value))
    sys.stdout.flush()


def completion_script(shell: str) -> str:
    """The script as installed (``ohpub.cli.completions`` in the wheel), or from the
    top-level ``completions/`` folder of a source checkout run without installing."""
    name = COMPLETION_FILES[shell]
    try:
        return (importlib.resources.files("ohpub.cli.completions") / name).read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        source = Path(__file__).resolve().parents[2] / "completions" / name
        return source.read_text(encoding="utf-8")


__all__ = ["completion_script"]
