"""The documentation is true: its code runs, its site builds strictly, its errors are listed.

Code blocks in README.md and docs/**/*.md are executed, page by page, each page in a fresh
directory (a subprocess, with the cache at ./.cache):

* Every ```python block runs, in the page's order, as one script at the end of the page,
  unless the line before it (blank lines aside) is ``<!-- not-runnable -->``. A line
  ``print(...)  # text`` must print the start of ``text`` (``# 3 ran, 7 reused``; what follows
  a comma-free match, like ``, from the cache``, is prose).
* A python block preceded by ``<!-- file: NAME -->`` is not run: it is written to NAME, as the
  reader would save it (later blocks for the same NAME replace it).
* A ```console block is a shell session: each ``$ command`` line runs (with ``bash``, in the
  page's directory, after the files above it were written) and must exit 0 (or the code in a
  ``# exit N`` comment at its end) and print exactly the lines below it, stdout and stderr
  together as a terminal shows them (progress is in its plain, non-TTY form). A line
  ``...`` matches any number of lines, and ``...`` inside a line matches any text (times,
  durations). ``<!-- not-runnable -->`` skips the block.
* A line ``--8<-- "examples/x.py"`` inside a block is replaced by that file, as
  ``pymdownx.snippets`` does on the site: pages show the examples without copying them.
* Other fences (```sh, ```text, ```make, ...) are illustrations and never run.

The tests are skipped for pages that have no runnable block.
"""

from __future__ import annotations

import ast
import html
import inspect
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent

_FENCE = re.compile(
    r"(?P<before>(?:^[ \t]*<!--[^\n]*-->[ \t]*\n(?:[ \t]*\n)*)*)"
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    flags=re.S | re.M,
)

_SNIPPET = re.compile(r'^--8<-- "([^"]+)"\n?', flags=re.M)


@dataclass
class Block:
    """A fenced code block and the HTML comments right before it."""

    lang: str
    body: str
    markers: list[str] = field(default_factory=list)

    @property
    def runnable(self) -> bool:
        return "not-runnable" not in self.markers

    @property
    def file(self) -> str | None:
        for marker in self.markers:
            if marker.startswith("file:"):
                return marker.split(":", 1)[1].strip()
        return None


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, dedented, with their markers."""
    found = []
    for m in _FENCE.finditer(text):
        indent = len(m["indent"])
        body = "".join(line[indent:] for line in m["body"].splitlines(keepends=True))
        body = _SNIPPET.sub(lambda s: (ROOT / s[1]).read_text(), body)
        markers = [c.strip() for c in re.findall(r"<!--(.*?)-->", m["before"])]
        found.append(Block(m["lang"], body, markers))
    return found


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CP_CACHE_DIR", "FORCE_COLOR")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "100"
    return env


def _matches(expected: str, actual: str) -> bool:
    parts = []
    for line in expected.splitlines():
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(r"[^\n]*?".join(map(re.escape, line.rstrip().split("..."))) + r"\n")
    got = "".join(line.rstrip() + "\n" for line in actual.splitlines())
    return re.fullmatch("".join(parts), got) is not None


def run_console(block: Block, cwd: Path, page: str) -> None:
    """Run each `$ command` of a console block and compare its stdout with the block."""
    sessions: list[tuple[str, list[str]]] = []
    for line in block.body.splitlines():
        if line.startswith("$ "):
            sessions.append((line[2:], []))
        elif sessions:
            sessions[-1][1].append(line)
    assert sessions, f"{page}: a console block without a '$ command' line"
    for command, expected in sessions:
        code = 0
        m = re.search(r"#\s*exit (\d+)\s*$", command)
        if m:
            code = int(m[1])
        proc = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=120,
        )
        assert proc.returncode == code, (
            f"{page}: `{command}` exited {proc.returncode}, expected {code}\n{proc.stdout}"
        )
        want = "\n".join(expected).strip("\n")
        assert _matches(want, proc.stdout.strip("\n")), (
            f"{page}: `{command}` printed\n{proc.stdout}\nbut the page shows\n{want}"
        )


# Extra checks appended to a page's script: the values the prose promises.
CHECKS = {
    "README.md": """
assert ans == 20, ans
assert result == 7, result
assert score_task.run() == -5.0
assert summarize_scores({'a': score_task}).run() == -5.0
assert len(large_output_task().run()) == 10_000_000
p = write_model(16).run()
assert Path(p).read_bytes() == b'\\0' * 16, p
assert Path(p).parent.name == write_model(16).id
assert my_task().run() == 42
assert some_downstream().run(rate_limits={'gpu': 1}) == 6
""",
    "docs/concepts.md": """
_root = Path(".cache/checkpoint")   # the layout the page draws
assert (_root / "FORMAT").is_file() and (_root / ".lock").is_file()
assert render.dirname == "__main__._page_script.render"   # a script's families name it
assert (_root / render.dirname / "cache.db").is_file()
assert (_root / render.dirname / "data" / render(4).id / "image.pgm").is_file()
""",
    "docs/dask.md": """
if __name__ == "__main__":  # Dask's worker processes run this script again
    assert report.values[total(20).id] == 2470
    assert (len(report.ran), len(report.reused)) == (11, 10)
""",
}


_PRINT_WITH_COMMENT = re.compile(r"^(?P<indent>[ \t]*)print\((?P<args>.*)\)[ \t]+#[ \t]*(?P<said>.+)$", re.M)

_EXPECT_PRINT = """
def _expect_print(call, said):
    import contextlib, io, sys
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        call()
    sys.stdout.write(buffer.getvalue())
    got = " ".join(buffer.getvalue().split())
    said = " ".join(said.split())
    # The comment is the output, or the output then a remark: "# 3.14, from the cache".
    assert got and (said == got or (said.startswith(got) and said[len(got)] in ",;( ")), (
        f"printed {got!r}, the page says # {said}")

"""


def checked_prints(source: str) -> str:
    """Make each `print(...)  # text` line of a script check that it prints (the start of) text."""
    return _PRINT_WITH_COMMENT.sub(
        lambda m: f"{m['indent']}_expect_print(lambda: print({m['args']}), {m['said'].strip()!r})",
        source,
    )


def run_page(path: Path, workdir: Path) -> subprocess.CompletedProcess[str] | None:
    """Execute a page's blocks in workdir; return the script's process (None: no script)."""
    name = str(path.relative_to(ROOT))
    script: list[str] = []
    for block in blocks(path.read_text()):
        if not block.runnable:
            continue
        if block.lang in ("python", "py"):
            if block.file:
                target = workdir / block.file
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.body)
            else:
                script.append(block.body)
        elif block.lang == "console":
            run_console(block, workdir, name)
    if not script:
        return None
    source = _EXPECT_PRINT + checked_prints("\n".join(script)) + CHECKS.get(name, "")
    source += '\nprint("PAGE OK")\n'
    (workdir / "_page_script.py").write_text(source)
    proc = subprocess.run(
        [sys.executable, "_page_script.py"], cwd=workdir, env=_env(),
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, f"{name}: its Python blocks failed:\n{proc.stderr}"
    assert "PAGE OK" in proc.stdout
    return proc


@pytest.mark.parametrize("path", doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_page_code_runs(path: Path, tmp_path: Path) -> None:
    """Every runnable block of a page should run and print what the page shows."""
    if not any(b.runnable and b.lang in ("python", "py", "console") for b in blocks(path.read_text())):
        pytest.skip("no runnable block")
    run_page(path, tmp_path)


def test_readme_examples_use_the_seed_layout(tmp_path: Path) -> None:
    """The README's examples should give the documented values and the seed's cache layout."""
    proc = run_page(ROOT / "README.md", tmp_path)
    assert proc is not None and "-5.0" in proc.stdout
    families = {p.name for p in (tmp_path / ".cache" / "checkpoint").iterdir()}
    # {module}.{function}, the script run as __main__ named by its path (_page_script.py)
    main = "__main__._page_script"
    assert {f"{main}.choose", f"{main}.f3", f"{main}.write_model"} <= families
    # choose.clear() removed the whole family directory.
    assert not (tmp_path / ".cache" / "checkpoint" / f"{main}.choose" / "data").exists()


def test_block_markers_are_understood() -> None:
    """The extractor should see markers, files, indentation and languages as documented above."""
    text = (
        "<!-- not-runnable -->\n```python\nboom()\n```\n\n"
        "<!-- file: taskfile.py -->\n\n```python title=\"taskfile.py\"\nx = 1\n```\n"
        "=== \"Tab\"\n\n    ```console\n    $ echo hi\n    hi\n    ```\n"
    )
    found = blocks(text)
    assert [(b.lang, b.runnable, b.file) for b in found] == [
        ("python", False, None), ("python", True, "taskfile.py"), ("console", True, None),
    ]
    assert found[2].body == "$ echo hi\nhi\n"
    assert _matches("a\n...\nz", "a\nb\nc\nz") and not _matches("a\nz", "a\nb\nz")
    assert _matches("Done in ...s: 3 ran", "Done in 1.5s: 3 ran")
    assert not _matches("Done in ...s: 3 ran", "Done in 1.5s: 4 ran")
    checked = checked_prints("print(x)   # 20, the answer\n    print(a, b)  # 1 2\nprint(y)\n")
    assert checked == (
        "_expect_print(lambda: print(x), '20, the answer')\n"
        "    _expect_print(lambda: print(a, b), '1 2')\nprint(y)\n"
    )
    scope: dict[str, object] = {}
    exec(_EXPECT_PRINT, scope)
    expect = scope["_expect_print"]
    expect(lambda: print(20), "20, the answer")  # type: ignore[operator]
    expect(lambda: print(285), "285")  # type: ignore[operator]
    for printed, said in ((2, "285"), (28, "285, the sum"), (3, "")):
        with pytest.raises(AssertionError):
            expect(lambda p=printed: print(p), said)  # type: ignore[operator]


def test_every_python_block_is_run_or_marked(tmp_path: Path) -> None:
    """No python block should be silently ignored: each runs, is a file, or is marked not-runnable."""
    for path in pages():
        for block in blocks(path.read_text()):
            assert block.lang not in ("", "python3", "pycon"), (
                f"{path.name}: use ```python (or mark the block) instead of ```{block.lang}"
            )


def test_troubleshooting_lists_every_error() -> None:
    """Every exception class in checkpoint.errors should have an entry in troubleshooting.md."""
    from checkpoint import errors

    page = (DOCS / "troubleshooting.md").read_text()
    classes = [
        name for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, errors.CheckpointError)
    ]
    missing = [name for name in classes if f"`{name}`" not in page]
    assert not missing, f"docs/troubleshooting.md does not explain: {', '.join(missing)}"


def _literal_pieces(node: ast.expr) -> list[str]:
    """The literal text of a message expression: an f-string's constant parts, and so on."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    if isinstance(node, ast.BinOp):
        return _literal_pieces(node.left) + _literal_pieces(node.right)
    if isinstance(node, ast.Call):  # a helper that decorates a message, e.g. _pointed(text, col, msg)
        return [p for arg in node.args for p in _literal_pieces(arg)]
    return []


# Lines the command line prints on stderr that are not exceptions but still need explaining.
_CLI_MESSAGE_PREFIXES = ("Error", "Internal error", "Interrupted", "interrupted", "Aborted",
                         "warning", "retrying")


def error_messages() -> list[tuple[str, str]]:
    """(where, fixed text) of every error message checkpoint's code raises or the CLI prints.

    Messages are the first argument of a checkpoint error or click.BadParameter /
    ClickException, and the stderr lines the CLI echoes for errors, interrupts and warnings.
    Their fixed texts are the literal parts (what stays when the values change), from 8
    characters up.
    """
    from checkpoint import errors

    error_names = {
        name for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, errors.CheckpointError)
    } | {"BadParameter", "ClickException"}
    found = []
    for path in sorted((ROOT / "checkpoint").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            pieces = [" ".join(p.split()) for p in _literal_pieces(node.args[0])]
            pieces = [p for p in pieces if len(p) >= 8]
            if name == "echo" and any(k.arg == "err" for k in node.keywords):
                pieces = [p for p in pieces if p.startswith(_CLI_MESSAGE_PREFIXES)]
            elif name not in error_names:
                continue
            found += [(f"{path.relative_to(ROOT)}:{node.lineno}", piece) for piece in pieces]
    return found


def test_troubleshooting_shows_every_error_message() -> None:
    """Every error message in checkpoint's code should appear, as printed, in troubleshooting.md."""
    found = error_messages()
    texts = {text for _, text in found}
    # The collector sees the messages it must (if it finds none, it is broken, not the page).
    assert "is not QUEUE=N with N >= 1" in texts and "Run 'checkpoint ls' to list tasks." in texts
    assert any(t.startswith("Interrupted: finished results were kept") for t in texts)
    page = " ".join((DOCS / "troubleshooting.md").read_text().split())
    missing = [f"{where}: {text!r}" for where, text in found if text not in page]
    assert not missing, (
        "docs/troubleshooting.md does not show these messages (add each, as printed, with what "
        "it means and what to do):\n" + "\n".join(missing)
    )


def _command_problems(line: str) -> list[str]:
    """What is wrong with a documented `checkpoint ...` command line: unknown commands, options."""
    import click

    from checkpoint.cli import cli

    line = line.strip().removeprefix("$ ")
    if not re.match(r"(\w+=\S*\s+)*checkpoint\s", line):
        return []
    tokens = shlex.split(line, comments=True)
    while re.fullmatch(r"\w+=\S*", tokens[0]):
        tokens.pop(0)
    command: click.Command = cli
    problems = []
    takes_value = False
    for token in tokens[1:]:
        if token in ("|", "&&", ";", "...") or token.startswith((">", "2>", "|", "[")):
            break
        if takes_value:
            takes_value = False
        elif token.startswith("-") and token != "-":
            for flag in token.split("=", 1)[0].split("/"):  # `--svg/--png` in prose
                flag = flag if flag.startswith("-") else f"--{flag}"
                option = next((p for p in command.params if isinstance(p, click.Option)
                               and flag in (*p.opts, *p.secondary_opts)), None)
                if option is None and flag not in ("-h", "--help"):
                    problems.append(f"`checkpoint {command.name}` has no option {flag}: {line}")
                elif option is not None and not (option.is_flag or option.count) and "=" not in token:
                    takes_value = True
        elif isinstance(command, click.Group):
            if token.isupper():  # a placeholder: `checkpoint COMMAND --help`
                break
            sub = command.commands.get(token)
            if sub is None:
                problems.append(f"there is no command `{token}`: {line}")
                break
            command = sub
    return problems


def documented_commands(text: str) -> list[str]:
    """The `checkpoint ...` command lines of a page: in shell blocks, and in inline code."""
    lines = [
        line for block in blocks(text) if block.lang in ("sh", "console", "bash")
        for line in block.body.splitlines()
    ]
    return lines + re.findall(r"`(checkpoint [^`\n]+)`", text)


def test_documented_commands_exist() -> None:
    """Every `checkpoint ...` command in README, docs and examples should name real commands and options."""
    assert _command_problems("checkpoint run --bogus -j 2 main")
    assert _command_problems("$ checkpoint cahce ls")
    assert not _command_problems("CP_CACHE_DIR=x checkpoint -f t.py cache prune --older-than 3d -y")
    sources = [*pages(), *sorted((ROOT / "examples").glob("*.py")), ROOT / "taskfile.py"]
    problems = []
    for path in sources:
        text = path.read_text()
        if path.suffix == ".py":  # headers: indented command lines in the module docstring
            lines = [line for line in (ast.get_docstring(ast.parse(text)) or "").splitlines()]
        else:
            lines = documented_commands(text)
        problems += [f"{path.relative_to(ROOT)}: {p}" for line in lines for p in _command_problems(line)]
    assert not problems, "\n".join(problems)


def test_api_reference_lists_every_public_name() -> None:
    """docs/api.md should render every name of checkpoint.__all__ and every error class."""
    import checkpoint
    from checkpoint import errors

    page = (DOCS / "api.md").read_text()
    documented = set(re.findall(r"^::: checkpoint\.(?:errors\.)?(\w+)\s*$", page, flags=re.M))
    error_classes = {
        name for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    }
    missing = (set(checkpoint.__all__) | error_classes) - documented
    assert not missing, f"docs/api.md has no '::: checkpoint.NAME' for: {', '.join(sorted(missing))}"


def test_site_builds_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict` should succeed, with every command and option in the CLI reference."""
    import click

    from checkpoint.cli import cli

    # Not skipped when mkdocs is missing: the dev extra installs it, and CI must build the site.
    assert (BIN / "mkdocs").is_file(), "mkdocs is not installed: pip install -e '.[dev]'"
    proc = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env={**_env(), "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "cli" / "index.html").is_file()
    cli_page = html.unescape((tmp_path / "site" / "cli" / "index.html").read_text())
    # The CLI reference is generated from the commands: each command has a section (headed
    # id="checkpoint-cache-ls"), and each of its options shows in that section.
    parts = re.split(r'<h\d id="(checkpoint[\w-]*)"', cli_page)
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    todo: list[tuple[str, click.Command]] = [("checkpoint", cli)]
    missing = []
    while todo:
        path, command = todo.pop()
        section = sections.get(path.replace(" ", "-"))
        if section is None:
            missing.append(path)
            continue
        missing += [
            f"{path} {flag}" for p in command.params if isinstance(p, click.Option)
            for flag in (*p.opts, *p.secondary_opts) if flag not in section
        ]
        if isinstance(command, click.Group):
            todo += [(f"{path} {name}", sub) for name, sub in command.commands.items()]
    assert not missing, f"docs/cli.md does not show: {missing}"
    api_page = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "TaskDirectory" in api_page and "rate_limits" in api_page
