"""Finished results and failed runs on their way into the store, written in batches.

Records are written in one transaction per family, at the latest every ``FLUSH_SECONDS``
or ``FLUSH_RECORDS`` records; each transaction is atomic, so a result is stored whole or
not at all. An interrupt waits for a transaction in progress.

With ``store_first`` (tasks on threads or inline, which share this process: one of them may
crash it, say with a segmentation fault in C code), records are written at every chance the
run gives (the end of each collect round) and the events saying a result is done
(:meth:`Recorder.in_order`) are emitted only once it is stored. That costs about one
transaction per batch of tasks, and batches take about ``_admission.BATCH_SECONDS`` each.

Either way, while records wait for the check of the Products upstream of their tasks that
covers them all (``checks_owed``, ``before_store``: see
:meth:`checkpoint._readchecks.ReadChecks.check_readers`), they are stored in larger
batches: as many as that check looked at outputs, or after ten times as long as it took.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ._interrupts import InterruptGuard
from ._types import FamilyDir, TaskId
from .events import Event
from .store import FailedRun, Record, Store

FLUSH_SECONDS = 0.2
FLUSH_RECORDS = 1000


class Recorder:
    """Buffers records and failures; :meth:`flush` stores them."""

    def __init__(self, store: Store, guard: InterruptGuard,
                 on_stored: Callable[[TaskId], None], *, store_first: bool = False,
                 emit: Callable[[Event], None] | None = None) -> None:
        self.store = store
        self.guard = guard
        self.on_stored = on_stored
        """Called for each record once it is stored (the run unlocks its task)."""
        self.records: list[Record] = []
        self.failures: list[tuple[FamilyDir, str, FailedRun]] = []
        self.first = 0.0
        self.store_first = store_first
        self.emit = emit
        self.deferred: list[Event] = []
        """Events to emit once the records added before them are stored."""
        self.checks_owed: Callable[[], tuple[int, float] | None] = lambda: None
        """While some records wait for a check made after their task ended (the Products
        upstream of a reader: :meth:`checkpoint._readchecks.ReadChecks.check_readers`): how
        many outputs the last such check looked at and how long it took."""
        self.before_store: Callable[[], None] = lambda: None
        """Called before records are stored (that check)."""

    def in_order(self, event: Event) -> None:
        """``store_first``: emit ``event`` once the results added before it are stored (a
        result is reported done once stored, and the events keep their order)."""
        if self.records or self.deferred:
            self.deferred.append(event)
        else:
            assert self.emit is not None
            self.emit(event)

    def add(self, record: Record) -> None:
        if not self.records:
            self.first = time.perf_counter()
        self.records.append(record)

    def add_failure(self, family: FamilyDir, tid: TaskId, run: FailedRun) -> None:
        self.failures.append((family, tid, run))

    def due(self) -> bool:
        if not self.records:
            return False
        age = time.perf_counter() - self.first
        owed = self.checks_owed()
        if owed is not None:
            # One check covers all the records waiting: store (and check) as many readers
            # at once as the last check looked at outputs, or after ten times as long as it
            # took, so that the checks of a chain of n producers are not n²/2.
            size, seconds = owed
            return (len(self.records) >= max(FLUSH_RECORDS, size)
                    or age >= max(FLUSH_SECONDS, 10 * seconds))
        return self.store_first or len(self.records) >= FLUSH_RECORDS or age >= FLUSH_SECONDS

    def flush(self) -> None:
        # Records are dropped only once stored (writing them again after an interrupted
        # attempt is harmless).
        if self.records:
            self.before_store()
        with self.guard.critical():
            if self.records:
                self.store.put_many(self.records)
                for record in self.records:
                    self.on_stored(record.id)
                self.records = []
            if self.failures:
                self.store.put_failed_runs(self.failures)
                self.failures = []
        if self.deferred and self.emit is not None:
            events, self.deferred = self.deferred, []
            for event in events:
                self.emit(event)
