"""The package's imports follow the layer order of docs/architecture.md.

Every import inside ``checkpoint/`` counts, lazy ones (inside functions) included; imports
under ``if TYPE_CHECKING:`` do not (they never run). A module may import its own layer or
the layers below it; the exceptions named on the architecture page are listed here, and
the import graph without them has no cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "checkpoint"
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"

EXCEPTIONS = {
    ("task", "scheduler"),  # Task.run: the original API's facade over the layers above
    ("task", "notebook"),  # Task._repr_html_
    ("scheduler", "progress"),  # run(progress=True): the one way to attach progress
    ("_worker", "debug"),  # the debugger stops the worker's output capture and back
}


def _layers() -> dict[str, int]:
    """Module -> layer number, read from the architecture page's "Layers" list."""
    text = ARCHITECTURE.read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers: dict[str, int] = {}
    for number, item in re.findall(r"^(\d+)\. (.*?)(?=^\d+\. |^\S|\Z)", section, re.M | re.S):
        for name in re.findall(r"`([\w/]+)`", item):
            layers[name.rstrip("/")] = int(number)
    return layers


def _imports() -> list[tuple[str, str, int, str]]:
    """``(importer, imported, line, file)`` for every import between checkpoint's modules,
    by top-level module name (``cli`` for the CLI package)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        me = rel.parts[0].removesuffix(".py")
        tree = ast.parse(path.read_text())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        depth = len(rel.parts) - 1
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            if node.level - 1 < depth:
                continue  # inside the cli package
            names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            found += [(me, name, node.lineno, str(rel)) for name in names if name != me]
    return found


def test_every_module_has_a_layer() -> None:
    layers = _layers()
    modules = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()
               if p.suffix == ".py" or (p / "__init__.py").exists()}
    unplaced = modules - set(layers) - {"__init__", "mypy"}
    assert not unplaced, f"add these modules to the layers of docs/architecture.md: {unplaced}"


def test_imports_point_down_the_layers() -> None:
    layers = _layers()
    upward = [f"{file}:{line}: {me} (layer {layers[me]}) imports {it} (layer {layers[it]})"
              for me, it, line, file in _imports()
              if me in layers and it in layers and layers[it] < layers[me]
              and (me, it) not in EXCEPTIONS]
    assert not upward, "\n".join(upward)


def test_no_import_cycle_but_the_named_ones() -> None:
    graph = nx.DiGraph((me, it) for me, it, _, _ in _imports()
                       if me not in ("__init__", "mypy") and (me, it) not in EXCEPTIONS)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles}"


def test_the_exceptions_are_named_on_the_architecture_page() -> None:
    text = ARCHITECTURE.read_text()
    for me, it in EXCEPTIONS:
        assert f"`{me}`" in text and f"`{it}`" in text, (me, it)
