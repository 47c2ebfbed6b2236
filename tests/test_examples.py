"""The taskfiles in examples/ run from the command line and print what their headers promise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CHECKPOINT = Path(sys.executable).with_name("checkpoint")


def checkpoint(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `checkpoint` command with its own cache; fail on a non-zero exit, or
    after a minute (every example promises to run in less)."""
    env = {**os.environ, "CP_CACHE_DIR": str(cache), "NO_COLOR": "1"}
    proc = subprocess.run(
        [str(CHECKPOINT), *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_every_example_has_a_header_saying_what_it_shows() -> None:
    """Each example should open with a docstring that says what it shows and how to run it."""
    files = sorted(EXAMPLES.glob("*.py"))
    assert len(files) >= 4
    for path in files:
        text = path.read_text()
        assert text.startswith('"""'), path
        assert "What it shows:" in text, path
        assert f"checkpoint -f examples/{path.name} run" in text, path


def test_binomial_example_computes_the_middle_of_row_30(tmp_path: Path) -> None:
    """examples/binomial.py should print C(30, 15), and any other choose(n, k) on request."""
    out = checkpoint(tmp_path, "-f", str(EXAMPLES / "binomial.py"), "run", "main")
    assert out.stdout.strip() == "155117520"
    out = checkpoint(tmp_path, "-f", str(EXAMPLES / "binomial.py"), "run", "choose(6, 3)")
    assert out.stdout.strip() == "20"


def test_ml_pipeline_example_scores_every_seed_and_keeps_its_files(tmp_path: Path) -> None:
    """examples/ml_pipeline.py should report a small error per seed and write data directories."""
    out = checkpoint(tmp_path, "-f", str(EXAMPLES / "ml_pipeline.py"), "run", "main")
    rmses = [float(x) for x in re.findall(r"seed \d: rmse (\d+\.\d+)", out.stdout)]
    assert len(rmses) == 5 and all(0.2 < r < 1.0 for r in rmses), out.stdout
    assert "mean rmse" in out.stdout
    models = list((tmp_path / "checkpoint" / "ml_pipeline.train" / "data").glob("*/model.json"))
    assert len(models) == 5
    again = checkpoint(tmp_path, "-f", str(EXAMPLES / "ml_pipeline.py"), "run", "main")
    assert again.stdout == out.stdout


def test_sweep_example_never_runs_two_gpu_tasks_at_once(tmp_path: Path) -> None:
    """examples/sweep.py under --rate-limit gpu=1 should find the best config with peak concurrency 1."""
    out = checkpoint(
        tmp_path, "-f", str(EXAMPLES / "sweep.py"), "run", "main", "-j", "4",
        "--rate-limit", "gpu=1", "--rate-limit", "download=2",
    )
    assert "best: lr=0.03 width=64" in out.stdout
    assert out.stdout.rstrip().endswith("8 configurations; peak GPU concurrency: 1")


def test_sweep_example_without_the_limit_says_trainings_shared_the_gpu(tmp_path: Path) -> None:
    """examples/sweep.py run plainly on 4 workers should find the same best config and flag the overlap."""
    taskfile = str(EXAMPLES / "sweep.py")
    out = checkpoint(tmp_path, "-f", taskfile, "run", "main", "-j", "4")
    assert "best: lr=0.03 width=64" in out.stdout
    # Without a limit, trainings overlap whenever two workers are free; the header says so.
    peak = int(re.findall(r"peak GPU concurrency: (\d+)", out.stdout)[0])
    assert 1 <= peak <= 4
    assert ("trainings shared the GPU" in out.stdout) == (peak > 1)
    # The header's sequence: clear the trainings, run with the limit, and the peak is 1.
    checkpoint(tmp_path, "-f", taskfile, "clear", "train", "-y")
    limited = checkpoint(tmp_path, "-f", taskfile, "run", "main", "-j", "4", "--rate-limit", "gpu=1")
    assert limited.stdout.rstrip().endswith("peak GPU concurrency: 1")


def test_files_example_reruns_only_what_depends_on_a_cleared_input(tmp_path: Path) -> None:
    """Clearing generate(2) should re-run transform(2) only; the other files' results are reused."""
    taskfile = str(EXAMPLES / "files.py")
    first = checkpoint(tmp_path, "-f", taskfile, "run", "main")
    stamps = dict(re.findall(r"file (\d): transformed at (\S+)", first.stdout))
    assert len(stamps) == 4 and "2000 words" in first.stdout
    checkpoint(tmp_path, "-f", taskfile, "clear", "generate(2)")
    plan = checkpoint(tmp_path, "-f", taskfile, "ls", "main")
    states = dict(re.findall(r"^(\S+)\s+(fresh|stale|missing)", plan.stdout, flags=re.M))
    assert states["generate(2)"] == "missing" and states["transform(2)"] == "stale"
    assert states["generate(1)"] == states["transform(1)"] == "fresh"
    second = checkpoint(tmp_path, "-f", taskfile, "run", "main")
    after = dict(re.findall(r"file (\d): transformed at (\S+)", second.stdout))
    assert after["2"] != stamps["2"]
    assert {k: v for k, v in after.items() if k != "2"} == {k: v for k, v in stamps.items() if k != "2"}
    assert "4 ran, 6 reused" in second.stderr  # generate(2), transform(2), aggregate, main


def test_demo_taskfile_header_suggests_commands_that_exist(tmp_path: Path) -> None:
    """Every `checkpoint ...` the top-level taskfile's header suggests should be a real command."""
    from checkpoint.cli import cli

    taskfile = EXAMPLES.parent / "taskfile.py"
    header = taskfile.read_text().split('"""')[1]
    suggested = set(re.findall(r"^\s+checkpoint (\w[\w-]*)", header, flags=re.M))
    assert {"ls", "graph", "clear", "why", "run"} <= suggested
    assert suggested <= set(cli.commands), suggested - set(cli.commands)
    # The demo's DAG plans without running: 90 binomial coefficients, 32 walks, 2 more.
    listing = checkpoint(tmp_path, "-f", str(taskfile), "ls", "main")
    assert "124 missing" in listing.stderr + listing.stdout


def test_ml_pipeline_variations_rerun_what_the_cookbook_says(tmp_path: Path) -> None:
    """Adding a seed should run only its three tasks and main; removing it again, main only."""
    taskfile = tmp_path / "taskfile.py"
    source = (EXAMPLES / "ml_pipeline.py").read_text()
    taskfile.write_text(source)
    first = checkpoint(tmp_path / "cache", "-f", str(taskfile), "run", "main")
    taskfile.write_text(source.replace("SEEDS = range(5)", "SEEDS = range(6)"))
    more = checkpoint(tmp_path / "cache", "-f", str(taskfile), "run", "main")
    assert "4 ran, 15 reused" in more.stderr and "seed 5: rmse" in more.stdout
    taskfile.write_text(source)
    back = checkpoint(tmp_path / "cache", "-f", str(taskfile), "run", "main")
    assert "1 ran, 15 reused" in back.stderr
    assert back.stdout == first.stdout


def test_demo_taskfile_header_walkthrough_does_what_it_says(tmp_path: Path) -> None:
    """The header's steps (clear walk(3), why, run; edit STEPS) should re-run what it promises."""
    source = (EXAMPLES.parent / "taskfile.py").read_text()
    assert "\nSTEPS = 4_000_000\n" in source
    taskfile = tmp_path / "taskfile.py"
    taskfile.write_text(source.replace("\nSTEPS = 4_000_000\n", "\nSTEPS = 2_000\n"))
    cache = tmp_path / "cache"
    first = checkpoint(cache, "-f", str(taskfile), "run")
    assert "124 ran" in first.stderr and "32 random walks of 2,000 steps" in first.stdout
    assert "Nothing to run" in checkpoint(cache, "-f", str(taskfile), "run").stderr
    graph = checkpoint(cache, "-f", str(taskfile), "graph", "--families", "--mermaid")
    assert graph.stdout.startswith("flowchart")
    checkpoint(cache, "-f", str(taskfile), "clear", "walk(3)")
    why = checkpoint(cache, "-f", str(taskfile), "why", "main")
    assert "walk(3) would run: missing" in why.stdout + why.stderr
    again = checkpoint(cache, "-f", str(taskfile), "run")
    # walk(3) is seeded: the same value, so walks_summary(32) and main() are kept.
    assert "1 ran, 123 reused" in again.stderr and "Kept 2 planned tasks" in again.stderr
    taskfile.write_text(source.replace("\nSTEPS = 4_000_000\n", "\nSTEPS = 1_000\n"))
    edited = checkpoint(cache, "-f", str(taskfile), "run")
    assert "34 ran, 90 reused" in edited.stderr  # 32 walks, the summary, main; not choose
