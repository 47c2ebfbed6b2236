"""Every command's --help shows examples (issue 19 item 21)."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from checkpoint.cli import cli


def _commands(cmd: click.Command, path: list[str]) -> Iterator[list[str]]:
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, [*path, name])
    else:
        yield path


@pytest.mark.parametrize("path", list(_commands(cli, [])), ids=" ".join)
def test_every_command_help_has_examples(runner: CliRunner, path: list[str]) -> None:
    result = runner.invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "\n  Examples:\n" in result.output, f"checkpoint {' '.join(path)} --help has no examples"
