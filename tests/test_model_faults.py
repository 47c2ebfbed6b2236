"""The model-based fault test (issue 16): random DAGs, edits and faults, checked against a
reference evaluation after every step. tests/faultmodel.py says what is generated, injected
and checked.

``make test`` runs a bounded version: per fault kind, three steps on a DAG of 20-30 tasks,
faults at deterministic moments (while a chosen task runs). ``make test-faults`` runs the
long version on DAGs of 20-200 tasks, faults also at random moments, and prints the figures.
Environment variables of the long version (all optional)::

    CP_MODEL_SEEDS=1,2,3        the seeds (default: 1 to 6)
    CP_MODEL_STEPS=40           steps per seed (default 20)
    CP_MODEL_KINDS=kill,retry   the fault kinds (default: every kind not in KNOWN_FAILING;
                                "all" for every kind)

A failure prints the seed and every step taken; the same seed, kinds and steps replay it
(faults at random moments may land elsewhere, so the long version prints what happened).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest
from faultmodel import KINDS, Harness

KNOWN_FAILING: dict[str, str] = {}
"""Fault kinds that can fail on main today (engine faults of issue 16 not fixed yet): the long
version leaves them out. Remove a kind once its reproductions in tests/test_fault_repros.py pass."""

XFAIL_BOUNDED: set[str] = set()
"""Of those, the kinds whose bounded case fails every time today (``xfail(strict=True)``); the
bounded cases of the others use seeds that do not meet the fault (it takes a rare timing)."""

BOUNDED_SEEDS = {
    "none": 1, "retry": 1, "fail": 1, "die": 1, "damage-blob": 1, "damage-many": 1,
    "damage-index": 1, "concurrent": 4, "concurrent-damage": 1, "clear-during": 4,
    "force-during": 4, "kill": 1,
}
"""The seed of each bounded case: the kind's fault is injected in most steps and, for the
kinds in XFAIL_BOUNDED, today's engine fails it every time."""


def _bounded_cases() -> list[object]:
    cases: list[object] = []
    for kind in BOUNDED_SEEDS:
        reason = KNOWN_FAILING.get(kind) if kind in XFAIL_BOUNDED else None
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        cases.append(pytest.param(kind, marks=marks, id=kind))
    return cases


@pytest.mark.parametrize("kind", _bounded_cases())
def test_model_bounded(tmp_path: Path, kind: str) -> None:
    """Three random steps with one fault kind (``none``: edits and clears only) should leave
    every printed and stored value equal to the reference, with no task computed more than
    its changes and faults require."""
    harness = Harness(
        tmp_path / "model", BOUNDED_SEEDS[kind], [] if kind == "none" else [kind],
        min_tasks=20, max_tasks=30, show_all=False, timing=False, timeout=90, fault_rate=1.0,
    )
    harness.steps(2 if kind == "force-during" else 3)  # (on a fixed engine it waits 3 s a step)
    if kind != "none":  # the fault was really injected, not skipped for lack of a target
        assert harness.counts[f"fault steps: {kind}"] >= 1, harness.summary()


def test_every_kind_has_a_bounded_case() -> None:
    """Each fault kind is exercised by `make test` (or deliberately left to the long run)."""
    assert set(BOUNDED_SEEDS) | {"concurrent-race"} == set(KINDS) | {"none"}
    assert XFAIL_BOUNDED <= set(KNOWN_FAILING) <= set(KINDS)


def _long_kinds() -> list[str]:
    text = os.environ.get("CP_MODEL_KINDS", "")
    if text == "all":
        return list(KINDS)
    if text:
        return [k for k in text.split(",") if k]
    return [k for k in KINDS if k not in KNOWN_FAILING]


@pytest.mark.faults
def test_model_long(tmp_path: Path) -> None:
    """Many random steps with every fault kind that the engine handles should all pass; prints
    how many steps, runs and faults of each kind were survived."""
    seeds = [int(s) for s in os.environ.get("CP_MODEL_SEEDS", "1,2,3,4,5,6").split(",") if s]
    steps = int(os.environ.get("CP_MODEL_STEPS", "20"))
    kinds = _long_kinds()
    total: Counter[str] = Counter()
    tasks = 0
    try:
        for seed in seeds:
            harness = Harness(tmp_path / f"seed{seed}", seed, kinds, min_tasks=20, max_tasks=200)
            tasks += len(harness.spec.deps)
            try:
                harness.steps(steps)
            except AssertionError:
                print(f"\nreplay: CP_MODEL_SEEDS={seed} CP_MODEL_KINDS={','.join(kinds)} "
                      f"CP_MODEL_STEPS={len(harness.history)} {sys.executable} -m pytest -s -m faults "
                      "tests/test_model_faults.py")
                raise
            finally:
                total.update(harness.counts)
                print(f"\nseed {seed} ({harness.spec.describe()}): {harness.summary()}")
    finally:
        left_out = sorted(set(KINDS) - set(kinds))
        print(f"\nmodel-based fault test: {len(seeds)} DAGs ({tasks} tasks in all), fault kinds "
              f"{', '.join(kinds)}" + (f"; left out: {', '.join(left_out)}" if left_out else ""))
        for key in sorted(total):
            print(f"  {key}: {total[key]}")
    assert total["steps survived"] == len(seeds) * steps
