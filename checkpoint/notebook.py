"""What a task looks like in Jupyter: a small table with its state and last run.

``Task._repr_html_`` calls :func:`task_html`, so a cell that ends with a task shows where it
stands (fresh, missing, code changed, ...), how big its stored value is and how long it last
took, without running anything. The state comes from the same plan as ``checkpoint ls``.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any

from ._units import size_text

if TYPE_CHECKING:
    from .task import Task


def task_state(task: Task[object], cache_dir: str | None = None) -> dict[str, Any]:
    """The facts the notebook view shows (also handy in scripts)."""
    from .graph import plan
    from .history import last_run
    from .store import Store

    store = Store.open(cache_dir)
    the_plan = plan([task], store)
    node = the_plan.nodes[task.id]
    stale = sum(1 for n in the_plan.nodes.values() if n.reason is not None)
    run = last_run(task, store)
    return {
        "task": task.expression(),
        "family": task.family.name,
        "state": node.reason or "fresh",
        "tasks": len(the_plan.nodes),
        "to_run": stale,
        "size": node.meta.size if node.meta is not None else None,
        "last_status": run.status if run else None,
        "last_duration": run.duration if run else None,
        "last_started": run.started if run else None,
    }


def task_html(task: Task[object]) -> str:
    """An HTML table describing ``task`` (see the module docstring)."""
    try:
        facts = task_state(task)
    except Exception as exc:  # noqa: BLE001 - a repr must not raise
        return f"<code>{html.escape(repr(task))}</code> <i>({html.escape(str(exc))})</i>"
    rows = [
        ("state", facts["state"] + (f" ({facts['to_run']} of {facts['tasks']} tasks would run)"
                                    if facts["to_run"] else f" (all {facts['tasks']} tasks fresh)")),
        ("stored", size_text(facts["size"]) if facts["size"] is not None else "nothing"),
    ]
    if facts["last_status"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(facts["last_started"]))
        rows.append(("last run", f"{facts['last_status']} in {facts['last_duration']:.3f}s at {when}"))
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
        f"{html.escape(v)}</td></tr>"
        for k, v in rows
    )
    title = f"<code>{html.escape(facts['task'])}</code> <small>{html.escape(facts['family'])}</small>"
    return f"<div>{title}<table>{body}</table></div>"
