"""Global options: -f, --cache-dir, CP_CACHE_DIR, -v/-q, --version, --help, taskfile lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from checkpoint import __version__

from .conftest import Invoke


def test_version(invoke: Invoke) -> None:
    """--version should print the package version and exit 0."""
    result = invoke("--version")
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_help_lists_commands(invoke: Invoke) -> None:
    """--help should list every subcommand."""
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ("run", "ls", "clear", "cache", "why", "touch"):
        assert f"  {name} " in result.stdout


def test_taskfile_found_in_parent(invoke: Invoke, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without -f, the taskfile of a parent directory should be used (and -v should say so)."""
    sub = project.parent / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    result = invoke("-v", "run", "--executor", "inline", "choose(3, 1)")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "3\n"
    assert f"Using taskfile {project}" in result.stderr


def test_cache_next_to_taskfile(invoke: Invoke, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CP_CACHE_DIR or --cache-dir, the cache should be .cache next to the taskfile."""
    monkeypatch.delenv("CP_CACHE_DIR")
    sub = project.parent / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    result = invoke("-v", "run", "--executor", "inline", "choose(2, 1)")
    assert result.exit_code == 0, result.stderr
    assert (project.parent / ".cache" / "checkpoint" / "taskfile.choose").is_dir()
    assert not (sub / ".cache").exists()
    assert f"Using cache directory {project.parent / '.cache'}" in result.stderr


def test_cp_cache_dir_env(invoke: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$CP_CACHE_DIR should choose the cache directory."""
    monkeypatch.setenv("CP_CACHE_DIR", str(tmp_path / "envcache"))
    assert invoke("run", "--executor", "inline", "choose(2, 1)").exit_code == 0
    assert (tmp_path / "envcache" / "checkpoint" / "taskfile.choose").is_dir()


def test_cache_dir_option_beats_env(invoke: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--cache-dir should override $CP_CACHE_DIR."""
    monkeypatch.setenv("CP_CACHE_DIR", str(tmp_path / "envcache"))
    result = invoke("--cache-dir", str(tmp_path / "opt"), "run", "--executor", "inline", "choose(2, 1)")
    assert result.exit_code == 0
    assert (tmp_path / "opt" / "checkpoint" / "taskfile.choose").is_dir()
    assert not (tmp_path / "envcache").exists()


def test_file_option(invoke: Invoke, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-f should load another taskfile (a file or a directory holding taskfile.py)."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "tasks.py").write_text(
        "from checkpoint import task\n\n@task\ndef main():\n    def __():\n        return 'other'\n    return __\n"
    )
    monkeypatch.chdir(other)
    result = invoke("-f", "tasks.py", "run", "--executor", "inline")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "other\n"
    result = invoke("-f", str(project.parent), "run", "--executor", "inline", "choose(3, 1)")
    assert result.stdout == "3\n"


def test_quiet_hides_messages(invoke: Invoke) -> None:
    """-q should keep stderr free of the run summary while stdout still has the value."""
    result = invoke("-q", "run", "--executor", "inline", "choose(3, 1)")
    assert result.exit_code == 0
    assert result.stdout == "3\n"
    assert result.stderr == ""


def test_verbose_before_and_show_output_after_run(invoke: Invoke, project: Path) -> None:
    """`checkpoint -v run` should name the taskfile and cache and show task output; `run -v` only the output."""
    after = invoke("run", "--executor", "inline", "-v", "chatty")
    assert after.exit_code == 0 and after.stdout == "said\n"
    assert "chatting on stdout" in after.stderr and "Using taskfile" not in after.stderr
    before = invoke("-v", "run", "--executor", "inline", "--force", "chatty")
    assert before.exit_code == 0 and before.stdout == "said\n"
    assert f"Using taskfile {project}" in before.stderr and "Using cache directory" in before.stderr
    assert "chatting on stdout" in before.stderr
    plain = invoke("run", "--executor", "inline", "--force", "chatty")
    assert "chatting on stdout" not in plain.stderr
    assert "'run -v'" in invoke("--help").stdout
    assert "'checkpoint -v run'" in invoke("run", "--help").stdout


def test_seed_form_translates_the_seeds_options() -> None:
    """`python -m checkpoint TASKFILE [seed options]` should become the equivalent `checkpoint` command."""
    import os

    from checkpoint.__main__ import SeedUsageError, _seed_args

    assert _seed_args(["t.py"]) == ["-f", "t.py", "run"]
    assert _seed_args(["run", "main"]) == ["run", "main"]
    assert _seed_args(["t.py", "--entrypoint=choose(2, 1)", "--exec-type", "thread", "--max-workers=3",
                       "--detect-source-change", "-k"]) == [
        "-f", "t.py", "run", "choose(2, 1)", "--executor", "thread", "-j", "3", "-k"]
    all_but_one = str(max(1, (os.cpu_count() or 1) - 1))
    assert _seed_args(["t.py", "-w", "-2", "--cache-dir=c", "--rate-limits", '{"a": 1, "b": 2}']) == [
        "-f", "t.py", "--cache-dir", "c", "run", "-j", all_but_one,
        "--rate-limit", "a=1", "--rate-limit", "b=2"]
    for bad in (["t.py", "-w", "many"], ["t.py", "--rate-limits", '{"a": "1"}'], ["t.py", "-e"]):
        with pytest.raises(SeedUsageError):
            _seed_args(bad)
