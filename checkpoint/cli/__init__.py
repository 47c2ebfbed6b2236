"""The ``checkpoint`` command line: a click group with one module per subcommand.

Exit codes: :class:`checkpoint.errors.ExitCode` defines them all (and docs/cli.md lists
them in one table); :class:`CheckpointGroup` maps every error to its code, in one place.

**Working directory.** Once the taskfile is found, commands that load it work in its
directory (the project root), as doit does in its dodo file's: the taskfile's module-level
code, task code and ``File()`` paths see the same files from wherever ``checkpoint`` was
started. Paths given on the command line (``-f``, ``--cache-dir``, ``CP_CACHE_DIR``,
``graph -o``) are still relative to where it was started. :meth:`CheckpointGroup.invoke`
restores the directory afterwards (for ``main()`` called in-process).

Start-up stays light: this package imports click and the core of checkpoint only; rich,
networkx, diskcache and cloudpickle are imported inside the commands that need them, so
``checkpoint --help`` and shell completion never pay for them.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from .. import __version__
from ..errors import CheckpointError, ExitCode, exit_code

if TYPE_CHECKING:
    from ..store import Store
    from ..task import Task, TaskFamily


@dataclass
class App:
    """Global options, shared by every subcommand through ``ctx.obj``."""

    taskfile_option: str | None = None
    cache_dir_option: str | None = None
    verbosity: int = 0
    invoked_from: Path = field(default_factory=Path.cwd)
    """The directory ``checkpoint`` was started in (command-line paths are relative to it)."""
    _taskfile: Path | None = None
    _module: ModuleType | None = field(default=None, repr=False)
    _said_cache: bool = False

    @property
    def quiet(self) -> bool:
        """``-q`` was given: only errors and data."""
        return self.verbosity < 0

    @property
    def taskfile(self) -> Path:
        """The taskfile in use (found on first access; ``-v`` says which)."""
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

            taskfile = self.taskfile
            os.chdir(taskfile.parent)  # the project root (see the module docstring)
            self._module = load_taskfile(taskfile)
        return self._module

    @property
    def module_loaded(self) -> bool:
        """Whether the taskfile was imported (without error)."""
        return self._module is not None

    def forget_module(self) -> None:
        """Forget the imported taskfile and the project modules it imported, so the next
        use imports them afresh (``run --watch``, after a change)."""
        from ..watch import forget_project_modules

        self._module = None
        forget_project_modules(self.taskfile.parent)

    @property
    def cache_dir(self) -> Path:
        """``--cache-dir``, else ``$CP_CACHE_DIR``, else ``.cache`` next to the taskfile."""
        env = os.environ.get("CP_CACHE_DIR")
        if self.cache_dir_option:
            path = self.invoked_from / self.cache_dir_option
        elif env:
            path = self.invoked_from / env
        else:
            path = self.taskfile.parent / ".cache"
        if not self._said_cache:
            _check_cache_dir(path, "--cache-dir" if self.cache_dir_option else
                             "CP_CACHE_DIR" if env else None)
            if self.verbosity > 0:
                click.echo(f"Using cache directory {path}", err=True)
            self._said_cache = True
        return path

    @property
    def store(self) -> Store:
        """The store of :attr:`cache_dir`."""
        from ..store import Store

        return Store.open(self.cache_dir)

    def families(self) -> dict[str, TaskFamily[..., object]]:
        """The taskfile's task families by name."""
        from ..taskfile import families

        return families(self.module)

    def family(self, name: str) -> TaskFamily[..., object]:
        """The taskfile's family called ``name`` (UnknownTaskError with hints otherwise)."""
        from ..taskfile import get_family

        return get_family(self.module, name, taskfile=self.taskfile, listing=self.listing)

    def targets(self, texts: tuple[str, ...] | list[str]) -> list[Task[object]]:
        """Target expressions -> distinct task handles (checked against annotations)."""
        from ..taskfile import resolve_targets

        return resolve_targets(self.module, list(texts), taskfile=self.taskfile,
                               listing=self.listing)

    @property
    def listing(self) -> str:
        """The command that lists the tasks of this taskfile, as the user would type it."""
        if self.taskfile_option is None:
            return "checkpoint ls"
        import shlex

        return f"checkpoint -f {shlex.quote(self.taskfile_option)} ls"


def _check_cache_dir(path: Path, given_by: str | None) -> None:
    """A cache directory that is a file, or lies under one, is bad input (exit status 2),
    however it was given."""
    from ..errors import UsageError

    for place in (path, *path.parents):
        if os.path.exists(place):
            if os.path.isdir(place):
                return
            where = "is a file" if place == path else f"is inside the file {place}"
            fix = f"; change {given_by}" if given_by else ""
            raise UsageError(f"The cache directory {path} {where}: a cache needs a directory"
                             f"{fix}.")


pass_app = click.make_pass_decorator(App)


class CheckpointGroup(click.Group):
    """The command group; maps every error to its message and exit code, in one place.

    Doing it in ``invoke`` (not only in :func:`main`) makes ``CliRunner`` tests see exactly
    what the console script does.
    """

    def invoke(self, ctx: click.Context) -> Any:
        import warnings

        from ..errors import RemoteWarning, UnsafeCacheWarning

        def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if issubclass(category, (UnsafeCacheWarning, RemoteWarning)):
                click.echo(f"warning: {message}", err=True)
            else:
                default_show(message, category, *args, **kwargs)

        default_show = warnings.showwarning
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = ""
        from .. import _text

        in_cli, _text.in_cli = _text.in_cli, True
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", UnsafeCacheWarning)  # the store warns once a path
                warnings.simplefilter("always", RemoteWarning)
                warnings.showwarning = show
                return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit):
            raise
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None
        except CheckpointError as exc:
            raise click.exceptions.Exit(show_error(exc)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted: finished results were kept; run again to resume.", err=True)
            raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None
        except BrokenPipeError:
            # The reader went away (`checkpoint why main | head`): stop quietly, as `cat`
            # does, and keep Python from complaining when it flushes stdout at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(ExitCode.BROKEN_PIPE) from None
        except Exception as exc:  # noqa: BLE001 - user code (e.g. a task's outer function) raised
            raise click.exceptions.Exit(show_error(exc)) from None
        finally:
            _text.in_cli = in_cli
            if cwd:  # the command may have moved to the project root
                os.chdir(cwd)


def show_error(exc: Exception) -> int:
    """Print an error that ends a command (a checkpoint error, else user code that raised
    outside a task, else a bug of checkpoint) to stderr; return its exit code."""
    if isinstance(exc, CheckpointError):
        click.echo(f"Error: {exc}", err=True)
        return exit_code(exc)
    from ..taskfile import shadowing_message
    from ._output import format_exception

    hint = shadowing_message(exc)
    if hint:  # not the task code's fault, nor checkpoint's: a project module's name
        click.echo(f"Error: {hint}\n{type(exc).__name__}: {exc}", err=True)
        return ExitCode.USAGE
    text = format_exception(exc)
    if _while_building(exc):
        # A task's outer function rejected its arguments (or the taskfile's code is wrong)
        # before anything ran: bad input, like a TaskDefinitionError.
        click.echo("Error: task code raised while the DAG was being built:\n" + text, err=True)
        return ExitCode.USAGE
    if 'File "' in text:  # not checkpoint's own frames alone: code it called, or a library
        click.echo("Error: code outside checkpoint raised (not in a task, and not while the DAG "
                   "was being built):\n" + text, err=True)
        return exit_code(exc)
    import traceback

    click.echo("Internal error in checkpoint (please report it):\n"
               + "".join(traceback.format_exception(exc)), err=True)
    return exit_code(exc)


def _while_building(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it came from) was raised by a task's outer function,
    or a class task's ``__init__``, called to expand the graph (:meth:`Task.spec`)."""
    from ..task import Task, _class_spec

    building = (Task.spec.__code__, _class_spec.__code__)
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        tb = error.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code in building:
                return True
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
    return False


@click.group(cls=CheckpointGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-f", "--file", "taskfile", metavar="TASKFILE", type=click.Path(dir_okay=True),
              help="The taskfile (default: taskfile.py here or in a parent directory).")
@click.option("--cache-dir", metavar="DIR", type=click.Path(),
              help="Cache directory (default: $CP_CACHE_DIR, else .cache next to the taskfile).")
@click.option("-v", "--verbose", count=True,
              help="Say more: which taskfile and cache are used; with run, also each task's "
                   "output (like 'run -v'). Repeatable.")
@click.option("-q", "--quiet", count=True, help="Say less: only errors and data.")
@click.version_option(__version__, "--version", prog_name="checkpoint")
@click.pass_context
def cli(ctx: click.Context, taskfile: str | None, cache_dir: str | None, verbose: int, quiet: int) -> None:
    """checkpoint: build Python computations as a cached, parallel task DAG.

    Targets are task calls with literal arguments: main, choose, 'choose(6, 3)',
    'choose(n=6, k=3)'. Run 'checkpoint COMMAND --help' for a command's options.
    """
    ctx.obj = App(taskfile, cache_dir, verbose - quiet)


def _register() -> None:
    """Add the subcommands (one module each; their heavy imports live inside the commands)."""
    from . import cache, clear, graph, log, ls, remote, report, run, touch, why

    for command in (run.run, ls.ls, clear.clear, cache.cache, why.why, touch.touch, graph.graph,
                    log.log, report.report, remote.push, remote.pull, remote.remote_group):
        cli.add_command(command)


_register()


def console(argv: list[str] | None = None) -> Any:
    """Entry point of the console script and ``python -m checkpoint``: :func:`main`, then
    a quick exit.

    The interpreter's last garbage collection walks every object the imports made (~12 ms,
    a tenth of a small command's time); freezing them skips that walk. Objects are still
    freed by reference counting, except the last plan (:func:`~checkpoint._gcpolicy.abandon`:
    freeing a 200,000-task plan took 0.1-0.2 s), and Python never promised to finalize the
    rest at exit.
    """
    import atexit
    import gc

    from .._gcpolicy import abandon, freeze_plans, release_taskfile_projects

    # Registered before the taskfile is loaded, so it runs after the project's own handlers.
    atexit.unregister(release_taskfile_projects)  # (once, however often it is called)
    atexit.register(release_taskfile_projects)

    freeze_plans()  # (this process ends after its command)
    try:
        return main(argv)
    finally:
        abandon()  # the last plan is left to the operating system, not freed
        gc.freeze()


def main(argv: list[str] | None = None) -> Any:
    """Run the command line in this process (errors and exit codes: :class:`CheckpointGroup`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return cli.main(args, prog_name="checkpoint")
    except KeyboardInterrupt:  # outside a command (e.g. while click parses)
        click.echo("Interrupted.", err=True)
        sys.exit(ExitCode.INTERRUPTED)
