"""Why tasks of a plan would run, diffed against what the store remembers: the library
function behind ``checkpoint why``. It returns plain records and never prints."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._text import clip
from ._types import FamilyDir, Json, Reason, TaskId
from .files import CAPTURED, INPUT, OUTPUT, READ
from .graph import ARRANGEMENT, Node, Plan
from .store import Meta, Store
from .task import Task, TaskFamily


@dataclass
class Explanation:
    """Why one task of a plan would run."""

    task: Task[object]
    reason: Reason
    details: list[str] = field(default_factory=list)
    """Human-readable facts, e.g. which prerequisite changed or which argument differs."""
    diff: str | None = None
    """For a code change: unified diff of the normalized source (stored -> current)."""

    def to_json(self) -> dict[str, Json]:
        return {"task": self.task.expression(), "family": self.task.family.name,
                "id": self.task.id, "reason": self.reason, "details": self.details,
                "diff": self.diff}


def explain(the_plan: Plan, store: Store) -> list[Explanation]:
    """Explain each task of a marked plan that would run, in topological order."""
    out = []
    source_diffs: dict[tuple[str, str], str | None] = {}
    for node in the_plan.nodes.values():
        if node.reason is None:
            continue
        task, meta = node.task, node.meta
        exp = Explanation(task, node.reason)
        if node.reason == Reason.MISSING:
            exp.details = _closest_entries(store, task)
        elif node.reason == Reason.CODE_CHANGED and meta is not None:
            key = (task.family.dirname, meta.fingerprint)
            if key not in source_diffs:
                source_diffs[key] = code_diff(store, task.family, meta.fingerprint)
            exp.diff = source_diffs[key]
            if exp.diff is None:
                exp.details.append("The source of the code that computed the stored result "
                                   "was not kept, so no diff can be shown.")
            elif not exp.diff:
                exp.details.append("The normalized source is the same; a helper or a "
                                   "constant it uses changed.")
        elif node.reason == Reason.UPSTREAM_RERUN:
            for dep in node.deps:
                dep_node = the_plan.nodes[dep]
                if dep_node.reason is not None:
                    exp.details.append(f"prerequisite {dep_node.task.expression()} will run "
                                       f"({dep_node.reason})")
        elif node.reason in (Reason.INPUT_MISSING, Reason.INPUT_CHANGED, Reason.OUTPUT_CHANGED):
            assert node.files is not None
            exp.details = list(node.files.details)
        elif node.reason == Reason.UPSTREAM_CHANGED and meta is not None:
            exp.details = _upstream_changes(the_plan, node, meta)
        elif node.reason == Reason.FORCED:
            exp.details.append("forced")
        out.append(exp)
    return out


@dataclass
class Causes:
    """The root causes among a plan's explanations: beside the targets, the tasks that would
    run for a reason of their own, grouped; the rest would re-run only because a
    prerequisite does."""

    groups: dict[tuple[str, Reason, str | None], list[Explanation]]
    """``{(family's short name, reason, code diff): explanations}``, in plan order."""
    upstream_only: int
    """How many tasks (targets aside) would re-run only because a prerequisite does."""


def root_causes(explanations: list[Explanation], targets: set[TaskId]) -> Causes:
    """Group the explanations of the tasks that are not ``targets`` (see :class:`Causes`)."""
    groups: dict[tuple[str, Reason, str | None], list[Explanation]] = {}
    upstream_only = 0
    for exp in explanations:
        if exp.task.id in targets:
            continue
        if exp.reason is Reason.UPSTREAM_RERUN:
            upstream_only += 1
        else:
            key = (exp.task.family.short_name, exp.reason, exp.diff)
            groups.setdefault(key, []).append(exp)
    return Causes(groups, upstream_only)


@dataclass
class PackageChange:
    """A fresh task whose code used installed packages that have another version now than
    when its result was stored: not a reason to re-run (installed code is not tracked),
    but worth knowing."""

    task: Task[object]
    changed: dict[str, tuple[str, str]]
    """``{package: (version when stored, version now)}``."""

    def to_json(self) -> dict[str, Json]:
        return {"task": self.task.expression(), "family": self.task.family.name,
                "id": self.task.id, "changed": {p: list(v) for p, v in self.changed.items()}}


def package_changes(the_plan: Plan, store: Store) -> list[PackageChange]:
    """The tasks of a marked plan that would be reused (fresh) although a package their
    code used has another version now (see :mod:`checkpoint._packages`), in plan order."""
    from ._packages import Versions

    by_family: dict[FamilyDir, dict[str, Meta]] = {}
    for tid, node in the_plan.nodes.items():
        if node.reason is None and node.meta is not None:
            by_family.setdefault(node.task.family.dirname, {})[tid] = node.meta
    recorded: dict[str, dict[str, str]] = {}
    for family, metas in by_family.items():
        recorded.update(store.package_versions(family, metas))
    versions = Versions()
    out = []
    for tid, node in the_plan.nodes.items():
        if tid in recorded and (changed := versions.changes(recorded[tid])):
            out.append(PackageChange(node.task, changed))
    return out


def code_diff(store: Store, family: TaskFamily[..., object], stored_fingerprint: str) -> str | None:
    """Unified diff of a family's normalized source, stored version -> current (``None``
    when the stored source was not kept)."""
    old = store.get_source(family.dirname, stored_fingerprint)
    if old is None:
        return None
    new = family.fingerprint[1]
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), "stored", "current",
                                 lineterm="")
    return "\n".join(lines)


def _closest_entries(store: Store, task: Task[object], limit: int = 3) -> list[str]:
    """Stored entries of the same family whose arguments differ least from the task's."""
    try:
        wanted = json.loads(task.encoded)
    except ValueError:
        return []
    scored: list[tuple[int, float, str, list[str]]] = []
    for _, meta in store.entries(task.family.dirname):
        try:
            have = json.loads(meta.args)
        except ValueError:
            continue
        if not isinstance(have, dict) or not isinstance(wanted, dict):
            continue
        changed = [
            f"{name}: {_short(have.get(name))} -> {_short(wanted.get(name))}"
            for name in sorted(set(have) | set(wanted))
            if have.get(name) != wanted.get(name)
        ]
        scored.append((len(changed), _distance(have, wanted), meta.expr, changed))
    if not scored:
        return ["No stored result for this family yet."]
    scored.sort(key=lambda s: (s[0], s[1], s[2]))
    lines = ["No stored result with these arguments; the closest stored ones:"]
    for _, _, expr, changed in scored[:limit]:
        lines.append(f"  {expr}  ({'; '.join(changed)})")
    return lines


def _distance(have: Mapping[str, object], wanted: Mapping[str, object]) -> float:
    """How far apart the numeric arguments are (a tie-breaker between equally many changes)."""
    total = 0.0
    for name, value in wanted.items():
        other = have.get(name)
        if isinstance(value, (int, float)) and isinstance(other, (int, float)):
            total += abs(float(value) - float(other))
    return total


def _short(value: object) -> str:
    return clip(json.dumps(value, sort_keys=True), 40)


def _upstream_changes(the_plan: Plan, node: Node, meta: Meta) -> list[str]:
    details = []
    for dep in node.deps:
        dep_node = the_plan.nodes[dep]
        expr = dep_node.task.expression()
        if dep not in meta.deps:
            details.append(f"new prerequisite {expr} (not used by the stored result)")
        elif dep_node.meta is None:
            details.append(f"prerequisite {expr} has no stored result")
        elif dep_node.meta.stamp != meta.deps[dep]:
            details.append(f"prerequisite {expr} was recomputed after this result was stored")
    current = set(node.deps)
    current.add(ARRANGEMENT)
    if node.files is not None:
        current.update(node.files.digests)
        current.update(OUTPUT + p.key(os.getcwd()) for p in node.files.outputs)
    dropped = set(meta.deps) - current
    for key in sorted(k for k in dropped if k.startswith((INPUT, OUTPUT))):
        kind = "input" if key.startswith(INPUT) else "output"
        details.append(f"{kind} file {key.split(':', 1)[1]} of the stored result is no longer declared")
    for key in sorted(k for k in dropped if k.startswith(READ)):
        details.append(f"file {key[len(READ):]} changed after its producer wrote it (an "
                       "output) or was planned (an input upstream) and before this result "
                       "was stored (it may come from either content)")
    for key in sorted(k for k in dropped if k.startswith(CAPTURED)):
        details.append(f"captured value {key[len(CAPTURED):]} of the stored result is no longer "
                       "captured")
    tasks = sum(1 for k in dropped if not k.startswith((INPUT, OUTPUT, READ, CAPTURED)))
    if tasks:
        details.append(f"{tasks} prerequisite(s) of the stored result are no longer required")
    if not details and meta.deps.get(ARRANGEMENT) != node.shape:
        details.append("the prerequisites are arranged differently from the stored result's "
                       "(the same ones in other places of @requires: swapped dict keys, "
                       "another order)")
    return details


