"""``checkpoint graph``: formats, targets, output files, families, warnings, images."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pydot
import pytest
from click.testing import CliRunner

from checkpoint.cli import cli

from .conftest import Invoke

TASKFILE = """
from pathlib import Path

from checkpoint import task, requires

@task
def fragile():
    def __():
        if Path("broken").exists():
            raise RuntimeError("broken")
        return 1
    return __

@task
def choose(n, k):
    if 0 < k < n:
        @requires(choose(n - 1, k - 1))
        @requires(choose(n - 1, k))
        def __(a, b):
            return a + b
    elif k == 0 or k == n:
        def __():
            return 1
    else:
        raise ValueError((n, k))
    return __

@task
def chain(i):
    if i:
        @requires(chain(i - 1))
        def __(prev):
            return prev + 1
    else:
        def __():
            return 0
    return __

@task
def main():
    @requires(choose(4, 2))
    def __(x):
        return x
    return __
"""


@pytest.fixture(autouse=True)
def taskfile(tmp_path: Path) -> Path:
    path = tmp_path / "taskfile.py"
    path.write_text(TASKFILE)
    return path


def dot_counts(text: str) -> tuple[int, int]:
    """(nodes, edges) of DOT text, parsed by pydot."""
    with warnings.catch_warnings():  # pydot uses pyparsing's deprecated camelCase names
        warnings.simplefilter("ignore", DeprecationWarning)
        graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None
    nodes = [n for n in graphs[0].get_nodes() if n.get_name() not in {"graph", "node", "edge"}]
    return len(nodes), len(graphs[0].get_edges())


def test_default_is_dot_of_main(runner: CliRunner) -> None:
    """Without options, graph should print DOT of main: choose(4, 2)'s 8 tasks plus main."""
    result = runner.invoke(cli, ["graph"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("digraph")
    assert dot_counts(result.stdout) == (9, 9)
    assert '"main()"' in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("flag", "check"),
    [
        ("--dot", lambda out: dot_counts(out) == (8, 8)),
        ("--mermaid", lambda out: len([line for line in out.splitlines() if "-->" in line]) == 8
         and len(re.findall(r"^\s*n\d+\[", out, re.M)) == 8),
        ("--json", lambda out: (len(json.loads(out)["nodes"]), len(json.loads(out)["edges"])) == (8, 8)),
    ],
    ids=["dot", "mermaid", "json"],
)
def test_choose_4_2_has_8_nodes_and_8_edges(runner: CliRunner, flag: str, check: object) -> None:
    """graph 'choose(4, 2)' should show 8 nodes and 8 edges in every text format."""
    result = runner.invoke(cli, ["graph", "choose(4, 2)", flag])
    assert result.exit_code == 0, result.output
    assert check(result.stdout)  # type: ignore[operator]


def test_states_change_after_run_and_clear(runner: CliRunner, cache_dir: Path) -> None:
    """After `run` the JSON should show fresh tasks; after clearing one entry, it and its dependents go stale."""
    def states() -> dict[str, tuple[str, str | None]]:
        out = runner.invoke(cli, ["graph", "--json"]).stdout
        return {n["label"]: (n["state"], n["reason"]) for n in json.loads(out)["nodes"]}

    assert set(states().values()) == {("stale", "missing")}
    assert runner.invoke(cli, ["run", "--executor", "inline"]).exit_code == 0
    assert set(states().values()) == {("fresh", None)}
    from checkpoint.store import Store
    from checkpoint.taskfile import load_taskfile

    module = load_taskfile(Path("taskfile.py"))
    module.choose(3, 2).clear(cache_dir=str(cache_dir))
    Store._open_stores.clear()
    after = states()
    assert after["choose(3, 2)"] == ("stale", "missing")
    assert after["choose(4, 2)"] == ("stale", "upstream re-run")
    assert after["main()"] == ("stale", "upstream re-run")
    assert after["choose(3, 1)"] == ("fresh", None)


def test_failed_in_last_run(runner: CliRunner, tmp_path: Path) -> None:
    """A task that failed in the last run should be 'failed' in graph, and fresh once it succeeds."""
    (tmp_path / "broken").touch()
    assert runner.invoke(cli, ["run", "fragile", "--executor", "inline"]).exit_code == 1
    out = runner.invoke(cli, ["graph", "fragile", "--json"]).stdout
    node = json.loads(out)["nodes"][0]
    assert (node["state"], node["reason"], node["last_run"]["status"]) == ("failed", "missing", "failed")
    assert "failed (1)" in runner.invoke(cli, ["graph", "fragile"]).stdout
    (tmp_path / "broken").unlink()
    assert runner.invoke(cli, ["run", "fragile", "--executor", "inline"]).exit_code == 0
    node = json.loads(runner.invoke(cli, ["graph", "fragile", "--json"]).stdout)["nodes"][0]
    assert node["state"] == "fresh"


def test_families_json_and_dot(runner: CliRunner) -> None:
    """--families should give one node per family, with counts and edge multiplicities."""
    result = runner.invoke(cli, ["graph", "--families", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {n["label"]: n["tasks"] for n in doc["nodes"]} == {"choose": 8, "main": 1}
    assert sorted((e["source"], e["target"], e["count"]) for e in doc["edges"]) == [
        ("taskfile.choose", "taskfile.choose", 8), ("taskfile.choose", "taskfile.main", 1),
    ]
    dot = runner.invoke(cli, ["graph", "--families"]).stdout
    assert dot_counts(dot) == (2, 2)


def test_output_file_and_format_from_suffix(runner: CliRunner, tmp_path: Path) -> None:
    """-o FILE should write the export there, picking the format from the suffix when none is given."""
    result = runner.invoke(cli, ["graph", "-o", "g.json"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert json.loads((tmp_path / "g.json").read_text())["schema"] == "checkpoint-graph/1"
    assert runner.invoke(cli, ["graph", "--mermaid", "-o", "g.txt"]).exit_code == 0
    assert (tmp_path / "g.txt").read_text().startswith("flowchart")
    assert runner.invoke(cli, ["graph", "-o", "g.dot"]).exit_code == 0
    assert dot_counts((tmp_path / "g.dot").read_text()) == (9, 9)


def test_large_graph_suggests_families(runner: CliRunner) -> None:
    """Above a few hundred tasks, graph should suggest --families on stderr, but not with it or --json."""
    result = runner.invoke(cli, ["graph", "chain(400)", "--mermaid"])
    assert result.exit_code == 0, result.output
    assert "401 tasks" in result.stderr and "--families" in result.stderr
    assert len(re.findall(r"-->", result.stdout)) == 400
    quiet = runner.invoke(cli, ["graph", "chain(400)", "--families"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert dot_counts(quiet.stdout) == (1, 1)
    as_json = runner.invoke(cli, ["graph", "chain(400)", "--json"])
    assert as_json.exit_code == 0 and as_json.stderr == ""
    assert len(json.loads(as_json.stdout)["nodes"]) == 401


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the console entry point (with its exit-code mapping); return (exit code, stderr)."""
    from checkpoint.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    code = info.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


def test_unknown_target_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown target should exit 2 with a hint and no traceback."""
    code, err = run_main(["graph", "chose(4, 2)"], capsys)
    assert code == 2
    assert "Did you mean 'choose'" in err
    assert "Traceback" not in err


def test_svg_without_graphviz_says_how_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--svg without Graphviz on PATH should exit 1 with install advice and the --dot fallback."""
    monkeypatch.setenv("PATH", "")
    code, err = run_main(["graph", "--svg", "-o", "g.svg"], capsys)
    assert code == 1
    assert "Graphviz" in err and "apt-get install graphviz" in err and "--dot" in err
    assert "Traceback" not in err
    assert not Path("g.svg").exists()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_svg_and_png_with_graphviz(runner: CliRunner, tmp_path: Path) -> None:
    """With Graphviz, --svg should print an SVG and --png -o should write a PNG file."""
    result = runner.invoke(cli, ["graph", "--svg"])
    assert result.exit_code == 0, result.output
    assert "<svg" in result.stdout and "choose(4, 2)" in result.stdout
    result = runner.invoke(cli, ["graph", "--png", "-o", "g.png", "--families"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")


def test_unsupported_suffix_and_conflicting_formats_are_errors(invoke: Invoke, tmp_path: Path) -> None:
    """`-o g.pdf` must not write DOT under a .pdf name; two format flags are not last-wins."""
    result = invoke("graph", "-o", "g.pdf")
    assert result.exit_code == 2
    assert "Cannot write the graph as '.pdf'" in result.stderr
    assert not (tmp_path / "g.pdf").exists()
    result = invoke("graph", "--mermaid", "--json")
    assert result.exit_code == 2 and "Choose one format: --json and --mermaid" in result.stderr
    result = invoke("graph", "--json", "-o", "g.mmd")
    assert result.exit_code == 2 and "does not match the file name" in result.stderr
    assert invoke("graph", "--dot", "-o", "g.txt").exit_code == 0
    assert (tmp_path / "g.txt").read_text().startswith("digraph")
