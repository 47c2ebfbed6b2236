"""The ``checkpoint`` command line: a click group with one module per subcommand.

Exit codes (mapped here, in one place): 0 success, 1 a task failed, 2 bad usage or bad
input, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from .. import __version__
from ..errors import CheckpointError


@dataclass
class App:
    """Global options, shared by every subcommand through ``ctx.obj``."""

    taskfile_option: str | None = None
    cache_dir_option: str | None = None
    verbosity: int = 0
    _taskfile: Path | None = None
    _module: ModuleType | None = field(default=None, repr=False)

    @property
    def taskfile(self) -> Path:
        """The taskfile in use (found on first access)."""
        if self._taskfile is None:
            from ..taskfile import find_taskfile

            self._taskfile = find_taskfile(self.taskfile_option)
            if self.verbosity > 0:
                click.echo(f"Using taskfile {self._taskfile}", err=True)
        return self._taskfile

    @property
    def module(self) -> ModuleType:
        """The imported taskfile."""
        if self._module is None:
            from ..taskfile import load_taskfile

            self._module = load_taskfile(self.taskfile)
        return self._module

    @property
    def cache_dir(self) -> Path:
        """``--cache-dir``, else ``$CP_CACHE_DIR``, else ``.cache`` next to the taskfile."""
        if self.cache_dir_option:
            return Path(self.cache_dir_option).absolute()
        env = os.environ.get("CP_CACHE_DIR")
        if env:
            return Path(env).absolute()
        return self.taskfile.parent / ".cache"


pass_app = click.make_pass_decorator(App)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-f", "--file", "taskfile", metavar="TASKFILE", help="The taskfile (default: taskfile.py here or in a parent directory).")
@click.option("--cache-dir", metavar="DIR", help="Cache directory (default: $CP_CACHE_DIR, else .cache next to the taskfile).")
@click.option("-v", "--verbose", count=True, help="Say more (repeatable).")
@click.option("-q", "--quiet", count=True, help="Say less.")
@click.version_option(__version__, prog_name="checkpoint")
@click.pass_context
def cli(ctx: click.Context, taskfile: str | None, cache_dir: str | None, verbose: int, quiet: int) -> None:
    """checkpoint: build Python computations as a cached, parallel task DAG."""
    ctx.obj = App(taskfile, cache_dir, verbose - quiet)


def _register() -> None:
    from . import graph as graph_cmd
    from . import log as log_cmd
    from . import run as run_cmd

    cli.add_command(run_cmd.run)
    cli.add_command(graph_cmd.graph)
    cli.add_command(log_cmd.log)


_register()


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the console script: run the CLI and map errors to exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return cli.main(args, prog_name="checkpoint", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except CheckpointError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
