"""What every ``clsim`` command prints with: the consoles, and errors as one line with exit 2.

Bad input of any kind (scenario, preset, data, model, arguments) prints one line naming the
file, the field and what was expected, and exits with code 2 — never a traceback.
"""
from __future__ import annotations

import functools
import sys
import time

import click
import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from clsim.config import ConfigError

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


class OneLineErrors(typer.core.TyperGroup):
    """Bad command-line arguments (unknown option or command, bad or missing value) print one
    line naming the command and the option, and exit 2 — like bad scenario files."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `clsim`: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            where = f"{exc.ctx.command_path}: " if getattr(exc, "ctx", None) else ""
            message = " ".join(exc.format_message().split())
            err_console.print(f"[bold red]error:[/] {escape(where + message)}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            err_console.print("aborted", highlight=False)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def friendly_errors(fn):
    """Turn a ConfigError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def elapsed(t0: float) -> str:
    s = time.perf_counter() - t0
    return f"{s / 60:.1f} min" if s > 90 else f"{s:.1f} s"
