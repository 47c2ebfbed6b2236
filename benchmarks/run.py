"""checkpoint benchmark suite: whole-process workloads, a Markdown table, a JSON record.

    python benchmarks/run.py [--quick] [--peers] [--only W1,W2] [--repeat N]

Each workload is a generated taskfile run through the `checkpoint` CLI in a fresh directory,
`--repeat` times; peers (doit, redun) run the same workloads in the same invocation, their
repetitions interleaved with checkpoint's so that machine drift hits all tools alike. See
benchmarks/README.md for what each workload measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Cell, Scenario, Step, fmt_cell, fmt_ratio, reported_seconds, run_process  # noqa: E402
from peers import PEERS, ensure_venv, peer_scenarios  # noqa: E402
from workloads import FULL, QUICK, checkpoint_scenarios, default_python, find_cli  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "progress")

Key = tuple[str, str]  # (workload, case)


def measure(scenarios: list[Scenario], repeat: int, peer_repeat: int, base: Path,
            timeout: float, log: Callable[[str], None]) -> dict[Key, dict[str, Cell]]:
    """Run every scenario `repeat` times (peers `peer_repeat`), workload by workload.

    Each repetition of a scenario gets a fresh directory; a workload's directories are removed
    only after its last repetition (deleting many small files slows the disk for a while).
    """
    cells: dict[Key, dict[str, Cell]] = {}
    for sc in scenarios:
        for step in sc.steps:
            cell = cells.setdefault((sc.workload, step.case), {}).setdefault(sc.tool, Cell())
            cell.na = step.na
    for workload in dict.fromkeys(sc.workload for sc in scenarios):
        group = [(i, sc) for i, sc in enumerate(scenarios) if sc.workload == workload]
        for rep in range(max(repeat, peer_repeat)):
            for i, sc in group:
                if rep >= (peer_repeat if sc.tool in PEERS else repeat):
                    continue
                rundir = base / workload / f"{i}-{sc.tool}" / f"rep{rep}"
                rundir.mkdir(parents=True)
                for name, text in sc.files.items():
                    (rundir / name).parent.mkdir(parents=True, exist_ok=True)
                    (rundir / name).write_text(text)
                _run_steps(sc, rundir, cells, timeout, log, f"rep {rep + 1}")
        shutil.rmtree(base / workload, ignore_errors=True)
    return cells


def _run_steps(sc: Scenario, rundir: Path, cells: dict[Key, dict[str, Cell]], timeout: float,
               log: Callable[[str], None], rep: str) -> None:
    failed = ""
    for step in sc.steps:
        cell = cells[sc.workload, step.case][sc.tool]
        if cell.na:
            failed = failed or "an earlier step is n/a"
            continue
        if failed and not sc.independent:
            cell.na = failed
            continue
        out = run_process(step.argv, rundir, env=step.env, timeout=timeout, pty=step.pty)
        label = f"{sc.workload} {sc.tool:10s} {step.case:34s} {rep}"
        if out.rc != 0:
            cell.na = f"exit {out.rc}: {out.error_line()}"
            cell.seconds.clear()
            failed = f"{step.case} failed"
            log(f"{label}: FAILED ({cell.na})")
            (rundir / "FAILED.log").write_text(out.stdout + "\n---\n" + out.stderr)
            continue
        cell.seconds.append(out.seconds)
        cell.rss_mb.append(out.max_rss_mb)
        inner = reported_seconds(out.stderr) if step.ideal is not None else None
        if inner is not None:
            cell.reported.append(inner)
        if step.expect and step.expect not in out.stdout + out.stderr:
            warning = f"output lacks the expected {step.expect[:20]!r}"
            if warning not in cell.warnings:
                cell.warnings.append(warning)
        log(f"{label}: {out.seconds:.3f} s, {out.max_rss_mb:.0f} MB")


def render(scenarios: list[Scenario], cells: dict[Key, dict[str, Cell]],
           peers: list[str]) -> tuple[str, list[str]]:
    """The Markdown table and its notes (shrunk peers, flagged outputs)."""
    steps: dict[Key, Step] = {}
    scale: dict[tuple[str, str], float] = {}
    notes: list[str] = []
    for sc in scenarios:
        for step in sc.steps:
            steps.setdefault((sc.workload, step.case), step)
        scale[sc.workload, sc.tool] = sc.scale
        if sc.size_note and sc.size_note not in notes:
            notes.append(sc.size_note + "; its ratio is scaled linearly (~)")
    head = ["workload", "case", "checkpoint", "reference"]
    for peer in peers:
        head += [peer, f"{peer}/cp"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (workload, case), by_tool in cells.items():
        step = steps[workload, case]
        ours = by_tool.get("checkpoint", Cell())

        def text(tool: str, step: Step = step, by_tool: dict[str, Cell] = by_tool) -> str:
            cell = by_tool.get(tool)
            return fmt_cell(cell, step.ideal, step.rss) if cell else ""

        row = [workload, case, text("checkpoint"), text("reference")]
        for peer in peers:
            cell = by_tool.get(peer)
            row += [text(peer), fmt_ratio(cell, ours, scale.get((workload, peer), 1.0))
                    if cell else ""]
        lines.append("| " + " | ".join(row) + " |")
        for tool, cell in by_tool.items():
            for w in cell.warnings:
                notes.append(f"[!] {workload} {case} ({tool}): {w}")
    return "\n".join(lines), notes


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the selected workloads, print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    ap.add_argument("--peers", action="store_true", help="also run doit and redun (W1, W2, W4)")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--size", type=int, default=None,
                    help="W8's task count (default 20,000; 200 with --quick); 200000 for the "
                         "200k-task sweep")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per measurement")
    ap.add_argument("--peer-repeat", type=int, default=None,
                    help="repetitions for peers (default: --repeat)")
    ap.add_argument("--peer-size", type=int, default=None,
                    help="shrink redun's W1/W2 to about this many tasks (it is slow)")
    ap.add_argument("--python", default=None,
                    help="python with checkpoint installed (default: .venv/bin/python)")
    ap.add_argument("--timeout", type=float, default=None, help="per-process timeout, seconds")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default: results/...)")
    args = ap.parse_args(argv)

    only = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in only if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    selected = only or list(WORKLOADS)
    sizes = QUICK if args.quick else FULL
    if args.size is not None:
        if args.size < 1:
            ap.error("--size must be at least 1")
        sizes = replace(sizes, sweep=args.size)
    timeout = args.timeout or (120.0 if args.quick else 1800.0)
    python = args.python or default_python()
    peer_repeat = args.peer_repeat if args.peer_repeat is not None else args.repeat

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    cli = find_cli(python)
    log(f"checkpoint CLI: {' '.join(cli.argv)}; features: {sorted(cli.features) or 'none'}"
        + (f" ({cli.missing_reason})" if cli.missing_reason else ""))
    scenarios = [sc for sc in checkpoint_scenarios(cli, sizes) if sc.workload in selected]
    peers: list[str] = []
    notes: list[str] = []
    if args.peers:
        peer_python, problem = ensure_venv(ROOT)
        if peer_python:
            peers = list(PEERS)
            extra = peer_scenarios(peer_python, sizes, args.peer_size)
            # Put each peer scenario right after checkpoint's scenarios of its workload.
            for sc in extra:
                if sc.workload in selected:
                    last = max((i for i, s in enumerate(scenarios) if s.workload == sc.workload),
                               default=len(scenarios) - 1)
                    scenarios.insert(last + 1, sc)
        else:
            notes.append(f"peers not run: {problem}")

    base = Path(tempfile.mkdtemp(prefix="cp-bench-"))
    started = time.time()
    try:
        cells = measure(scenarios, args.repeat, peer_repeat, base, timeout, log)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    table, more = render(scenarios, cells, peers)
    notes += more
    print(f"\ncheckpoint benchmarks ({'quick' if args.quick else 'full'} sizes, "
          f"{args.repeat} repetition{'s' if args.repeat > 1 else ''}{'' if not peers else f', peers {peer_repeat}'}; "
          f"median (min-max); {os.cpu_count()} cores, Python {platform.python_version()})\n")
    print(table)
    for note in notes:
        print(f"\n- {note}", end="")
    print()

    record = {
        "started": started, "seconds": time.time() - started, "quick": args.quick,
        "repeat": args.repeat, "peer_repeat": peer_repeat, "peer_size": args.peer_size,
        "python": python, "cli": cli.argv, "cli_features": sorted(cli.features),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "rows": [{"workload": w, "case": c, "tool": tool, "seconds": cell.seconds,
                  "rss_mb": cell.rss_mb, "reported": cell.reported, "na": cell.na, "warnings": cell.warnings}
                 for (w, c), by_tool in cells.items() for tool, cell in by_tool.items()],
        "notes": notes, "table": table,
    }
    out = args.out or ROOT / "benchmarks" / "results" / time.strftime("bench-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
