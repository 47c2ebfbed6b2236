"""checkpoint: a make/doit-style build tool for Python computations.

Decorate an outer function with :func:`task`; inside it, declare prerequisites with
:func:`requires` on an inner function that computes the result. Calling a task family
returns a lazy :class:`Task` handle; :meth:`Task.run` builds it and its upstream, reusing
results cached on disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    CheckpointError as CheckpointError,
)
from .errors import (
    CorruptEntryError as CorruptEntryError,
)
from .errors import (
    CycleError as CycleError,
)
from .errors import (
    InvalidRequirementError as InvalidRequirementError,
)
from .errors import (
    MissingInputError as MissingInputError,
)
from .errors import (
    MissingOutputError as MissingOutputError,
)
from .errors import (
    StoreError as StoreError,
)
from .errors import (
    TaskArgumentError as TaskArgumentError,
)
from .errors import (
    TaskDefinitionError as TaskDefinitionError,
)
from .errors import (
    TaskFailedError as TaskFailedError,
)
from .errors import (
    TaskTimeoutError as TaskTimeoutError,
)
from .errors import (
    UnserializableArgumentError as UnserializableArgumentError,
)
from .errors import (
    UnserializableResultError as UnserializableResultError,
)
from .errors import (
    UsageError as UsageError,
)
from .errors import (
    WorkerDiedError as WorkerDiedError,
)
from .files import File as File
from .files import Product as Product
from .task import Requires as Requires
from .task import Task as Task
from .task import TaskDirectory as TaskDirectory
from .task import TaskFamily as TaskFamily
from .task import requires as requires
from .task import task as task

if TYPE_CHECKING:
    from .scheduler import RunResult as RunResult
    from .scheduler import run as run

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CorruptEntryError",
    "CycleError",
    "File",
    "InvalidRequirementError",
    "MissingInputError",
    "MissingOutputError",
    "Product",
    "Requires",
    "RunResult",
    "StoreError",
    "Task",
    "TaskArgumentError",
    "TaskDefinitionError",
    "TaskDirectory",
    "TaskFailedError",
    "TaskFamily",
    "TaskTimeoutError",
    "UnserializableArgumentError",
    "UnserializableResultError",
    "UsageError",
    "WorkerDiedError",
    "requires",
    "run",
    "task",
]


def __getattr__(name: str) -> Any:
    # The scheduler (process pools, SQLite) loads on first use: `checkpoint --help` and
    # shell completion import this package and should not pay for it.
    if name in ("run", "RunResult"):
        from . import scheduler

        return getattr(scheduler, name)
    raise AttributeError(f"module 'checkpoint' has no attribute {name!r}")
