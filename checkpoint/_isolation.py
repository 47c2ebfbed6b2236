"""Each attempt of a task starts from its own copy of what its inner function holds.

An inner function holds its task's arguments (its outer function's parameters) and the
values the outer function computed for it (:mod:`checkpoint._captured`), and may change
them in place: ``layers.append(...)``, ``params["seed"] = seed`` (as xgboost and LightGBM
want a config). On the process executor each attempt unpickles its own copy; but several
tasks of one pickled batch would share what they shared on the coordinator (one config
from an ``lru_cache``'d loader), and on the thread and inline executors every attempt (a
retry, a forced re-run of a handle) and every task would work on the planned objects
themselves. So :func:`attempt_function`, called by the worker before each attempt, gives
a copy of the inner function whose closure cells (and defaults, and a partial's
arguments) hold copies of the mutable containers among those values.

What is copied, at any depth through what is copied and through tuples: lists, dicts,
sets, bytearrays (their subclasses too), instances of dataclasses and namespaces
(``types.SimpleNamespace``, ``argparse.Namespace``), and the functions the outer function
made that the inner function reaches (with their cells: a ``nonlocal`` counter starts
again too). What is not: anything else (a NumPy array, a DataFrame, a model, an object of
a class of one's own), which is the same object for every task and attempt that holds it
(copying a large array per task would cost too much, and many objects cannot be copied);
a function not made by a call (a module-level one) with its defaults; a variable of a
function enclosing the task's definition, which the outer function did not make (read as a
global is); a value that fails to copy (it is used as it is). docs/concepts.md states the
rule.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import types
from collections.abc import Callable
from functools import partial
from typing import Any

from ._bytecode import written_cells
from .identity import _EXACT

__all__ = ["attempt_function", "attempt_values", "enclosing_cells"]

_Memo = dict[int, Any]


def attempt_function(fn: Callable[..., object], enclosing: tuple[int, ...] = ()) -> Callable[..., object]:
    """``fn`` as one attempt of its task computes with: a copy holding its own copies of
    the mutable values it captured (see the module docstring), or ``fn`` itself when it
    holds none (the usual closure over scalars, which no attempt can change).
    ``enclosing``: the indexes of its closure cells that are not its outer function's
    (:func:`enclosing_cells`), kept as they are."""
    memo: _Memo = {}
    if enclosing:
        closure = getattr(fn, "__closure__", None) or ()
        memo = {id(closure[i]): closure[i] for i in enclosing}
    if type(fn) is types.FunctionType and _plain(fn, memo):
        return fn
    made: Callable[..., object] = _callable(fn, memo)
    return made


def enclosing_cells(outer: object, fn: object) -> tuple[int, ...]:
    """The indexes of the closure cells of the inner function ``fn`` that its outer function
    ``outer`` did not make but holds itself, from a function enclosing the task's
    definition (a test's, a notebook helper's): such a variable is read as a global is,
    the same object for every task and attempt, not copied."""
    if type(fn) is not types.FunctionType or fn.__closure__ is None:
        return ()
    if hasattr(outer, "__wrapped__"):  # (a decorator under @task)
        outer = inspect.unwrap(outer)  # type: ignore[arg-type]
    cells = getattr(outer, "__closure__", None)
    if cells is None:  # (a task defined at the top of its module: the usual case)
        return ()
    ids = {id(c) for c in cells}
    return tuple(i for i, c in enumerate(fn.__closure__) if id(c) in ids)


def attempt_values(state: dict[str, Any]) -> dict[str, Any]:
    """A class task's attributes as one attempt computes with: copies, by the same rule."""
    return _value(state, {})  # type: ignore[no-any-return]


def _plain(fn: types.FunctionType, kept: _Memo) -> bool:
    """Whether ``fn`` holds only scalars that its code does not rebind, or cells ``kept``
    as they are (the fast path)."""
    if fn.__defaults__ is not None or fn.__kwdefaults__ is not None:
        return False
    closure = fn.__closure__
    if not closure:
        return True
    for cell in closure:
        if id(cell) in kept:
            continue
        try:
            if type(cell.cell_contents) not in _EXACT:
                return False
        except ValueError:  # not bound yet
            return False
    return len(kept) == len(closure) or not written_cells(fn.__code__)


def _callable(fn: Any, memo: _Memo) -> Any:
    kind = type(fn)
    if kind is types.FunctionType:
        return _function(fn, memo)
    if kind is partial:
        return partial(_callable(fn.func, memo), *_value(fn.args, memo), **_value(fn.keywords, memo))
    if kind is types.MethodType:
        return types.MethodType(_callable(fn.__func__, memo), _value(fn.__self__, memo))
    return _value(fn, memo)  # a callable object: a value (a dataclass with a __call__)


def _function(fn: types.FunctionType, memo: _Memo) -> types.FunctionType:
    """A copy of a function made by a call (the outer function, a factory), with its own
    cells (one per cell: the functions that share a cell share its copy) and defaults; a
    function defined at the top of a module is itself (its defaults are module state)."""
    done = memo.get(id(fn))
    if done is not None or "<locals>" not in fn.__qualname__:
        return done if done is not None else fn
    cells = None if fn.__closure__ is None else tuple(_cell(c, memo) for c in fn.__closure__)
    done = memo.get(id(fn))  # made meanwhile, if it holds itself (a recursive helper)
    if done is not None:
        return done  # type: ignore[no-any-return]
    made = memo[id(fn)] = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__,
                                             _value(fn.__defaults__, memo), cells)
    made.__kwdefaults__ = _value(fn.__kwdefaults__, memo)
    made.__dict__.update(fn.__dict__)
    made.__qualname__, made.__module__, made.__doc__ = fn.__qualname__, fn.__module__, fn.__doc__
    made.__annotations__ = fn.__annotations__
    return made


def _cell(cell: types.CellType, memo: _Memo) -> types.CellType:
    done = memo.get(id(cell))
    if done is None:
        done = memo[id(cell)] = types.CellType()
        try:
            content = cell.cell_contents
        except ValueError:  # not bound yet
            return done
        kind = type(content)
        if kind is types.FunctionType or kind is partial:  # a helper: its cells are copied too
            done.cell_contents = _callable(content, memo)
        else:
            done.cell_contents = _value(content, memo)
    return done


def _value(value: Any, memo: _Memo) -> Any:
    """A copy of ``value`` no attempt's change reaches, as far as the module docstring's
    rule goes; ``value`` itself when nothing in it is copied or the copy fails."""
    if type(value) in _EXACT:
        return value
    done = memo.get(id(value))
    if done is not None:
        return done
    try:
        return _copied(value, memo)
    except Exception:  # noqa: BLE001 - a value that cannot be copied is used as it is
        memo[id(value)] = value
        return value


def _copied(value: Any, memo: _Memo) -> Any:
    kind = type(value)
    if kind is dict or kind is list:
        made = memo[id(value)] = value.copy()
        items = value.items() if kind is dict else enumerate(value)
        for k, v in items:
            if type(v) not in _EXACT:
                made[k] = _value(v, memo)
        return made
    if kind is tuple:
        memo[id(value)] = value  # (a tuple holds itself only through a copied container)
        new = tuple([v if type(v) in _EXACT else _value(v, memo) for v in value])
        if any(a is not b for a, b in zip(new, value, strict=True)):
            memo[id(value)] = new
            return new
        return value
    if kind is set or kind is bytearray:  # (a set's items are hashable: not copied)
        made = memo[id(value)] = value.copy()
        return made
    if isinstance(value, (dict, list, set, bytearray)):
        return _subclass(value, memo)
    if isinstance(value, tuple) and hasattr(kind, "_make"):  # a named tuple
        memo[id(value)] = value
        fields = [_value(v, memo) for v in value]
        if any(a is not b for a, b in zip(fields, value, strict=True)):
            made = memo[id(value)] = kind._make(fields)
            return made
        return value
    if (dataclasses.is_dataclass(value) and not isinstance(value, type)) or kind is types.SimpleNamespace \
            or (kind.__name__ == "Namespace" and kind.__module__ == "argparse"):
        return _attributes(value, memo)
    memo[id(value)] = value
    return value


def _subclass(value: Any, memo: _Memo) -> Any:
    """A dict, list, set or bytearray of a subclass (``OrderedDict``, ``defaultdict``, a
    ``Counter``): copied by :func:`copy.copy` (its class and attributes kept), then filled
    with copies through the base class (no overridden ``__setitem__`` called twice)."""
    made = memo[id(value)] = copy.copy(value)
    if isinstance(value, dict):
        for k, v in value.items():
            if type(v) not in _EXACT:
                dict.__setitem__(made, k, _value(v, memo))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if type(v) not in _EXACT:
                list.__setitem__(made, i, _value(v, memo))
    return made


def _attributes(value: Any, memo: _Memo) -> Any:
    """A dataclass instance or a namespace: a shallow copy (no ``__init__`` run), whose
    attributes are copies in turn (set in its ``__dict__``, or through ``object`` for slots,
    so a frozen dataclass is copied too)."""
    made = memo[id(value)] = copy.copy(value)
    state = getattr(made, "__dict__", None)
    if isinstance(state, dict):
        for k, v in list(state.items()):
            if type(v) not in _EXACT:
                state[k] = _value(v, memo)
    else:
        for field in dataclasses.fields(value):
            v = getattr(value, field.name)
            if type(v) not in _EXACT:
                object.__setattr__(made, field.name, _value(v, memo))
    return made
