"""Whether planning's objects leave the garbage collector's walks for good (a tiny module:
the command line sets it before importing anything heavy)."""

from __future__ import annotations

for_good = False
"""Read by :func:`checkpoint.graph.plan`; set by :func:`freeze_plans`."""


def freeze_plans() -> None:
    """From now on, leave each plan's objects (and all others alive then) out of the
    garbage collector's walks for good (``gc.freeze``), for a process that ends after its
    command: the command line's (:func:`checkpoint.cli.console`).

    Otherwise :func:`checkpoint.graph.plan` moves them to the oldest generation, where
    millions of objects still cost a full collection as soon as the command allocates
    after planning (the collector judges by the oldest generation's size at its last full
    collection): 2.6 s of a 14 s dry run of a 1,000,000-task lattice, 0.25 s of ``ls`` of a
    200,000-task sweep. A plan holds no reference cycles, so nothing of it is kept once it
    is dropped; what is garbage when a later plan starts is collected first.
    """
    global for_good
    for_good = True
