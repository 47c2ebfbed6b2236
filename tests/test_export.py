"""Graph export: DOT, Mermaid and JSON renderings, the family view, images through Graphviz."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pydot
import pytest
from conftest import CHOOSE

from checkpoint import export
from checkpoint.errors import GraphvizNotFoundError
from checkpoint.graph import expand

PIPELINE = """
from checkpoint import task, requires

@task
def load(i):
    def __():
        return list(range(i + 2))
    return __

@task
def train(i):
    @requires(load(i))
    def __(data):
        return sum(data)
    return __

@task
def score(i):
    @requires(load(i))
    @requires(train(i))
    def __(data, model):
        if model == BAD:
            raise RuntimeError("bad model")
        return model / len(data)
    return __

@task
def summary(n):
    @requires([score(i) for i in range(n)])
    def __(scores):
        return max(scores)
    return __

BAD = -1
"""

DOT_DEFAULTS = {"graph", "node", "edge"}


def dot_graph(text: str) -> pydot.Dot:
    """Parse DOT text with pydot (a real DOT parser)."""
    with warnings.catch_warnings():  # pydot uses pyparsing's deprecated camelCase names
        warnings.simplefilter("ignore", DeprecationWarning)
        graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None and len(graphs) == 1
    return graphs[0]


def dot_nodes(graph: pydot.Dot) -> dict[str, pydot.Node]:
    """The graph's nodes by name, without the default-attribute statements."""
    return {n.get_name(): n for n in graph.get_nodes() if n.get_name() not in DOT_DEFAULTS}


def dot_labels(graph: pydot.Dot) -> dict[str, dict[str, Any]]:
    """Node attributes by (unquoted) label."""
    out = {}
    for node in dot_nodes(graph).values():
        attrs = {k: v.strip('"') if isinstance(v, str) else v for k, v in node.get_attributes().items()}
        out[attrs["label"].replace('\\"', '"').replace("\\\\", "\\")] = attrs
    return out


def mermaid_edges(text: str) -> list[str]:
    return [line for line in text.splitlines() if "-->" in line]


def mermaid_nodes(text: str, prefix: str = "n") -> list[str]:
    return [line for line in text.splitlines() if re.match(rf"\s*{prefix}\d+\[", line)]


@pytest.fixture
def choose(make_module: Callable[[str, str], ModuleType]) -> Any:
    return make_module("choose_mod", CHOOSE).choose


@pytest.fixture
def pipeline(make_module: Callable[[str, str], ModuleType]) -> ModuleType:
    return make_module("pipeline_mod", PIPELINE)


def by_label(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["label"]: n for n in doc["nodes"]}


def test_choose_dag_has_8_nodes_and_8_edges(choose: Any) -> None:
    """The choose(4, 2) DAG should expand to 8 tasks and 8 prerequisite edges."""
    nodes = expand([choose(4, 2)])
    assert len(nodes) == 8
    assert sum(len(n.deps) for n in nodes.values()) == 8


def test_dot_has_8_nodes_and_8_edges_and_parses(choose: Any) -> None:
    """DOT of choose(4, 2) should parse with pydot, with 8 labelled nodes and 8 edges."""
    graph = dot_graph(export.to_dot(choose(4, 2)))
    assert len(dot_nodes(graph)) == 8
    assert len(graph.get_edges()) == 8
    assert set(dot_labels(graph)) == {
        "choose(4, 2)", "choose(3, 1)", "choose(3, 2)", "choose(2, 0)", "choose(2, 1)",
        "choose(2, 2)", "choose(1, 0)", "choose(1, 1)",
    }


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graphviz_reads_the_dot_without_warnings(choose: Any, pipeline: ModuleType) -> None:
    """Graphviz's own parser should accept every DOT view (legend included) silently, 8 nodes and 8 edges."""
    import subprocess

    def graphviz(text: str) -> dict[str, Any]:
        proc = subprocess.run(["dot", "-Tjson"], input=text.encode(), capture_output=True, check=False)
        assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    doc = graphviz(export.to_dot(choose(4, 2)))
    assert (len(doc["objects"]), len(doc["edges"])) == (8, 8)
    assert {o["label"] for o in doc["objects"]} >= {"choose(4, 2)", "choose(1, 1)"}
    pipeline.BAD = 1
    from checkpoint import run

    run([pipeline.summary(2)], executor="inline", keep_going=True, raise_on_failure=False)
    assert len(graphviz(export.to_dot(pipeline.summary(2)))["objects"]) == 7
    assert len(graphviz(export.to_dot(pipeline.summary(2), families=True))["objects"]) == 4


def test_dot_edges_point_from_prerequisite_to_dependent(choose: Any) -> None:
    """Each DOT edge should go from a prerequisite to the task that requires it."""
    graph = dot_graph(export.to_dot(choose(4, 2)))
    label = {name: n.get_attributes()["label"].strip('"') for name, n in dot_nodes(graph).items()}
    edges = {(label[e.get_source()], label[e.get_destination()]) for e in graph.get_edges()}
    assert ("choose(3, 1)", "choose(4, 2)") in edges
    assert ("choose(4, 2)", "choose(3, 1)") not in edges
    assert ("choose(1, 0)", "choose(2, 1)") in edges


def test_mermaid_has_one_line_per_node_and_edge(choose: Any) -> None:
    """Mermaid of choose(4, 2) should have 8 node lines and one edge line per edge."""
    text = export.to_mermaid(choose(4, 2))
    assert text.startswith("flowchart")
    assert len(mermaid_nodes(text)) == 8
    assert len(mermaid_edges(text)) == 8
    assert all(re.fullmatch(r"\s*n\d+ --> n\d+", line) for line in mermaid_edges(text))


def test_json_has_8_nodes_and_8_edges(choose: Any) -> None:
    """The JSON document of choose(4, 2) should list 8 nodes and 8 edges between them."""
    doc = json.loads(export.to_json(choose(4, 2)))
    assert len(doc["nodes"]) == 8
    assert len(doc["edges"]) == 8
    ids = {n["id"]: n["label"] for n in doc["nodes"]}
    assert doc["targets"] == [choose(4, 2).id]
    assert {(ids[e["source"]], ids[e["target"]]) for e in doc["edges"]} >= {
        ("choose(2, 1)", "choose(3, 1)"), ("choose(2, 1)", "choose(3, 2)")
    }


def test_json_schema_keys(choose: Any) -> None:
    """The JSON document should carry exactly the documented keys, in both views."""
    doc = export.to_dict(choose(4, 2))
    assert set(doc) == {"schema", "view", "targets", "nodes", "edges"}
    assert doc["schema"] == export.SCHEMA == "checkpoint-graph/1"
    assert doc["view"] == "tasks"
    node = by_label(doc)["choose(4, 2)"]
    assert set(node) == {
        "id", "family", "label", "arguments", "state", "reason", "duration", "stored", "last_run",
    }
    assert node == {
        "id": choose(4, 2).id, "family": "choose_mod.choose", "label": "choose(4, 2)",
        "arguments": {"n": 4, "k": 2}, "state": "stale", "reason": "missing",
        "duration": None, "stored": None, "last_run": None,
    }
    assert all(set(e) == {"source", "target"} for e in doc["edges"])
    fam = export.to_dict(choose(4, 2), families=True)
    assert set(fam) == {"schema", "view", "targets", "nodes", "edges"}
    assert fam["view"] == "families"
    assert set(fam["nodes"][0]) == {"id", "family", "label", "tasks", "states"}
    assert set(fam["edges"][0]) == {"source", "target", "count"}


def test_states_change_after_run_and_clear(choose: Any) -> None:
    """Nodes should go missing -> fresh after a run, and a clear should mark it and its dependents stale."""
    target = choose(4, 2)
    before = by_label(export.to_dict(target))
    assert {n["reason"] for n in before.values()} == {"missing"}
    target.run(executor="inline")
    after = by_label(export.to_dict(target))
    assert {n["state"] for n in after.values()} == {"fresh"}
    assert all(n["duration"] is not None and n["stored"] for n in after.values())
    assert {n["last_run"]["status"] for n in after.values()} == {"done"}
    choose(2, 1).clear()
    cleared = by_label(export.to_dict(target))
    assert cleared["choose(2, 1)"]["reason"] == "missing"
    for dependent in ("choose(3, 1)", "choose(3, 2)", "choose(4, 2)"):
        assert cleared[dependent]["reason"] == "upstream re-run"
    assert cleared["choose(2, 0)"]["state"] == "fresh"
    fills = {label: attrs["fillcolor"] for label, attrs in dot_labels(dot_graph(export.to_dot(target))).items()}
    assert fills["choose(2, 0)"] != fills["choose(2, 1)"] != fills["choose(3, 1)"]


def test_code_change_shows_as_code_changed(
    make_module: Callable[[str, str], ModuleType]
) -> None:
    """Editing a family's code should show its stored tasks as 'code changed'."""
    make_module("choose_mod", CHOOSE).choose(3, 1).run(executor="inline")
    edited = make_module("choose_mod", CHOOSE.replace("return a + b", "return b + a"))
    doc = by_label(export.to_dict(edited.choose(3, 1)))
    assert doc["choose(3, 1)"]["reason"] == "code changed"
    assert "code changed (" in export.to_dot(edited.choose(3, 1))


def test_failed_tasks_are_drawn_failed(pipeline: ModuleType) -> None:
    """A task whose last run failed should be in state 'failed' in every format, from the run history."""
    from checkpoint import run

    pipeline.BAD = 1  # train(0) returns sum([0, 1]) == 1
    target = pipeline.summary(2)
    report = run([target], executor="inline", keep_going=True, raise_on_failure=False)
    assert list(report.failed) == [pipeline.score(0).id]
    doc = by_label(export.to_dict(target))
    assert doc["score(0)"]["state"] == "failed"
    assert doc["score(0)"]["reason"] == "missing"
    assert doc["score(0)"]["last_run"]["status"] == "failed"
    assert doc["score(0)"]["last_run"]["duration"] is not None
    assert doc["score(1)"]["state"] == "fresh"
    assert doc["summary(2)"]["state"] == "stale"  # skipped, not failed
    dot = export.to_dot(target)
    assert "bold" in dot_labels(dot_graph(dot))["score(0)"]["style"]
    assert "failed (1)" in dot
    assert re.search(r"n\d+\[\"score\(0\)\"\]:::failed", export.to_mermaid(target))
    assert export.to_dict(target, families=True)["nodes"][2]["states"] == {"fresh": 1, "failed": 1}
    # failed= overrides the history, e.g. with a run report's failures
    assert by_label(export.to_dict(target, failed=()))["score(0)"]["state"] == "stale"
    assert by_label(export.to_dict(target, failed=report.failed))["score(0)"]["state"] == "failed"


def test_a_graph_view_reads_failures_from_its_own_cache(pipeline: ModuleType, tmp_path: Path) -> None:
    """A GraphView of another cache should read the failed runs it shows from that cache."""
    from checkpoint import run

    pipeline.BAD = 1
    other = tmp_path / "other-cache"
    run([pipeline.score(0)], executor="inline", raise_on_failure=False, cache_dir=other)
    node = by_label(export.view(pipeline.score(0), cache_dir=other).to_dict())["score(0)"]
    assert node["state"] == "failed"
    assert node["last_run"]["duration"] is not None


def test_every_reason_has_a_look(choose: Any) -> None:
    """A node of any reason, "corrupt" (set while a run reads a damaged entry) included,
    should be drawn with the look of its reason in every format."""
    from checkpoint._types import Reason
    from checkpoint.graph import plan
    from checkpoint.store import Store

    the_plan = plan([choose(3, 1)], Store.open())
    n = len(the_plan)
    for reason in Reason:
        for node in the_plan.nodes.values():
            node.reason = reason
        assert f"{reason} ({n})" in export.to_dot(the_plan, failed=())
        assert f'"{reason} ({n})"' in export.to_mermaid(the_plan, failed=())
        assert by_label(export.to_dict(the_plan, failed=()))["choose(3, 1)"]["reason"] == reason


def test_a_fixed_task_is_no_longer_failed(pipeline: ModuleType) -> None:
    """After a failed task succeeds, the graph should show it fresh again."""
    from checkpoint import run

    pipeline.BAD = 1
    run([pipeline.score(0)], executor="inline", raise_on_failure=False)
    assert by_label(export.to_dict(pipeline.score(0)))["score(0)"]["state"] == "failed"
    pipeline.BAD = -1
    run([pipeline.score(0)], executor="inline")
    node = by_label(export.to_dict(pipeline.score(0)))["score(0)"]
    assert (node["state"], node["last_run"]["status"]) == ("fresh", "done")


def test_families_view_counts_and_multiplicities(pipeline: ModuleType) -> None:
    """--families should give one node per family with task counts, and edges with multiplicities."""
    target = pipeline.summary(3)
    pipeline.load(0).run(executor="inline")
    doc = export.to_dict(target, families=True)
    nodes = {n["label"]: n for n in doc["nodes"]}
    assert {k: v["tasks"] for k, v in nodes.items()} == {"load": 3, "train": 3, "score": 3, "summary": 1}
    assert nodes["load"]["states"] == {"fresh": 1, "missing": 2}
    assert nodes["summary"]["states"] == {"missing": 1}
    edges = {(e["source"].split(".")[-1], e["target"].split(".")[-1]): e["count"] for e in doc["edges"]}
    assert edges == {("load", "train"): 3, ("load", "score"): 3, ("train", "score"): 3, ("score", "summary"): 3}
    assert doc["targets"] == ["pipeline_mod.summary"]

    graph = dot_graph(export.to_dot(target, families=True))
    assert len(dot_nodes(graph)) == 4
    assert sorted(e.get_attributes()["label"].strip('"') for e in graph.get_edges()) == ["3"] * 4
    assert "load\\n3 tasks: 1 fresh, 2 missing" in export.to_dot(target, families=True)

    text = export.to_mermaid(target, families=True)
    assert len(mermaid_nodes(text, "f")) == 4
    assert len(mermaid_edges(text)) == 4
    assert all('-->|"3"|' in line for line in mermaid_edges(text))


def test_recursive_family_has_a_self_edge(choose: Any) -> None:
    """A family whose tasks require each other should get one edge to itself with the edge count."""
    doc = export.to_dict(choose(4, 2), families=True)
    assert doc["nodes"][0]["tasks"] == 8
    assert doc["edges"] == [{"source": "choose_mod.choose", "target": "choose_mod.choose", "count": 8}]


def test_several_targets_and_a_plan(choose: Any, pipeline: ModuleType) -> None:
    """Exports should accept several tasks (one DAG) and an already built plan."""
    from checkpoint.graph import plan
    from checkpoint.store import Store

    doc = export.to_dict([choose(2, 1), pipeline.train(0)])
    assert len(doc["nodes"]) == 5 and len(doc["edges"]) == 3
    assert len(doc["targets"]) == 2
    the_plan = plan([choose(4, 2)], Store.open())
    assert export.to_dot(the_plan) == export.to_dot(choose(4, 2))


def test_labels_with_quotes_and_backslashes_are_escaped(
    make_module: Callable[[str, str], ModuleType]
) -> None:
    """Arguments with quotes, backslashes and newlines should keep DOT and Mermaid valid."""
    mod = make_module("odd_mod", """
        from checkpoint import task

        @task
        def echo(text):
            def __():
                return text
            return __
    """)
    tricky = 'say "hi" \\ it\'s\n<b>#1</b>'
    t = mod.echo(tricky)
    labels = dot_labels(dot_graph(export.to_dot(t)))
    assert list(labels) == [t.expression().replace("\n", "\\n")]
    node_line = mermaid_nodes(export.to_mermaid(t))[0]
    inner = node_line[node_line.index('["') + 2: node_line.rindex('"]')]
    assert '"' not in inner and "<b>" not in inner
    assert json.loads(export.to_json(t))["nodes"][0]["arguments"] == {"text": tricky}


def test_legend_lists_present_states_and_can_be_left_out(choose: Any) -> None:
    """The legend should show the states present with counts, and legend=False should drop it."""
    choose(2, 1).run(executor="inline")
    dot = export.to_dot(choose(3, 1))
    assert "fresh (3)" in dot and "missing (2)" in dot and "code changed" not in dot
    mermaid = export.to_mermaid(choose(3, 1))
    assert 'legend_fresh["fresh (3)"]' in mermaid
    assert "fresh (3)" not in export.to_dot(choose(3, 1), legend=False)
    assert "legend" not in export.to_mermaid(choose(3, 1), legend=False).split("classDef")[0]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_render_svg_and_png_with_graphviz(choose: Any, tmp_path: Path) -> None:
    """With Graphviz installed, render() should give an SVG naming the tasks, and PNG bytes."""
    svg = export.render(choose(4, 2), "svg").decode()
    assert "<svg" in svg and "choose(4, 2)" in svg
    assert export.render(choose(4, 2), "png").startswith(b"\x89PNG")
    view = export.view(choose(4, 2))
    assert "<svg" in view._repr_mimebundle_()["image/svg+xml"]
    assert view.save(tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")


def test_render_without_graphviz_says_how_to_install(
    choose: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Graphviz, render() should raise a message naming how to install it and --dot."""
    monkeypatch.setattr(export.shutil, "which", lambda name: None)
    with pytest.raises(GraphvizNotFoundError) as info:
        export.render(choose(4, 2), "svg")
    message = str(info.value)
    assert "Graphviz" in message and "apt-get install graphviz" in message and "--dot" in message


def test_graph_view_falls_back_to_mermaid_without_graphviz(
    choose: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """In a notebook without Graphviz, the view should display as Mermaid Markdown and still save text."""
    monkeypatch.setattr(export.shutil, "which", lambda name: None)
    view = export.view(choose(4, 2))
    bundle = view._repr_mimebundle_()
    assert "image/svg+xml" not in bundle
    assert bundle["text/markdown"].startswith("```mermaid\nflowchart")
    assert view._repr_svg_() is None
    assert "8 tasks, 8 edges" in repr(view)
    saved = view.save(tmp_path / "g.json")
    assert len(json.loads(saved.read_text())["nodes"]) == 8
    with pytest.raises(ValueError, match="format"):
        view.save(tmp_path / "g.txt")


FAN_IN = """
from checkpoint import task, requires

@task
def sq(i):
    def __():
        return i * i
    return __

@task
def shared():
    def __():
        return 1
    return __

@task
def main(n):
    @requires([sq(i) for i in range(n)])
    @requires(shared())
    def __(xs, one):
        return sum(xs) + one
    return __

@task
def other():
    @requires(shared())
    def __(one):
        return one
    return __
"""


def test_a_wide_fan_in_is_drawn_as_a_box_of_rows(make_module: Callable[[str, str], ModuleType]) -> None:
    """40 leaves feeding one task: in a box (a DOT cluster, a Mermaid subgraph) of rows of
    8, in order, with one edge labelled 40 into the task; a leaf that feeds two tasks keeps
    its own edges. JSON keeps every edge."""
    mod = make_module("fanin_mod", FAN_IN)
    targets = [mod.main(40), mod.other()]
    text = export.to_dot(targets)
    graph = dot_graph(text)
    [cluster] = graph.get_subgraphs()
    label = {name: n.get_attributes()["label"].strip('"')
             for name, n in {**dot_nodes(graph), **dot_nodes(cluster)}.items()}
    boxed = {label[name] for name in dot_nodes(cluster)}
    assert boxed == {f"sq({i})" for i in range(40)}
    assert 'label="sq: 40 tasks"' in cluster.to_string()
    visible = [(label[e.get_source()], label[e.get_destination()], e.get_attributes())
               for e in graph.get_edges() if e.get_attributes().get("style") != "invis"]
    assert sorted((s, d) for s, d, _ in visible) == [
        ("shared()", "main(40)"), ("shared()", "other()"), ("sq(36)", "main(40)")]
    [(_, _, into)] = [v for v in visible if v[0] == "sq(36)"]
    assert into["ltail"].strip('"') == "cluster_fan0" and into["label"].strip('"') == "40"
    assert "n0 -> n8 [style=invis]" in text and "n0 -> n1 -> n2" in text  # rows, in order
    assert len(export.to_dict(targets)["edges"]) == 42
    mermaid = export.to_mermaid(targets)
    assert '  subgraph fan0["sq: 40 tasks"]\n' in mermaid and "    n0 ~~~ n1 ~~~ n2" in mermaid
    assert len(mermaid_nodes(mermaid)) == 43  # the box's 40, main, shared, other
    ids = {label: f"n{i}" for i, label in re.findall(r'n(\d+)\["([^"]+)"\]', mermaid)}
    assert sorted(e.strip() for e in mermaid_edges(mermaid)) == sorted([
        f'fan0 -->|"40"| {ids["main(40)"]}', f'{ids["shared()"]} --> {ids["main(40)"]}',
        f'{ids["shared()"]} --> {ids["other()"]}'])
    if shutil.which("dot"):  # Graphviz reads it silently
        import subprocess

        proc = subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True, check=False)
        assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
