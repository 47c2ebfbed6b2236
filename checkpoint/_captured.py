"""What an inner function captured from its outer function: values that count as inputs.

A task's outer function runs when the graph is expanded, and what it computes there for the
inner function (``cfg = json.load(open("config.json"))``, ``os.environ["LR"]``, a dataclass
built from them) reaches the inner function through its closure, or as the default value of
one of its parameters. That is an input of the task as much as a ``File`` is: its code is
in the family's fingerprint, its value is not. So each such value gets a digest, the way a
module-level value read by the code gets its text (:class:`checkpoint.fingerprint._Values`:
a canonical text, a deterministic pickle's digest, the same in every process), recorded
with the result in ``Meta.deps`` under ``captured:<name>`` (:data:`checkpoint.files.CAPTURED`,
beside the file digests: no new store format). A changed value makes the task stale
(``input changed``; ``why`` names the variable), an unchanged one re-runs nothing.

A value is digested as the outer function made it, before the inner function ran: once per
:class:`~checkpoint.task.Spec` (:func:`captured_values` is called when the graph is
expanded; an expansion that finds the task's spec made already, a task object run again in a
session, takes the digests it recorded then). So a closure variable the inner code changes
(``params["seed"] = seed``, a memo, a counter) counts by its value before any change, and a
random generator by its state then (the seed it was made with). The inner function itself
may be any callable: a bound method counts with the object it is bound to, another callable
object as a value (what the outer function put into it), a wrapper by what it wraps.

What does not count: the cells holding the outer function's own parameters, which are the
task's arguments (its identity) already, unless the outer function rebinds or changes them;
a mutable object of the outer function's module (``rng = RNG``, ``return MODEL.predict``),
which counts as the module-level value it is, in the fingerprint, unless a function of that
module changes it (a config a helper loads lazily: ``global _CFG; _CFG = json.load(...)``):
the fingerprint counts such a global by its assignment, as state, so it counts here;
closure variables that a function the outer function did not define (a module-level one)
changes (state kept between calls, as for :func:`~checkpoint.fingerprint.bound_values`);
and everything of a family pinned with ``@task(version=...)``. What an open file or a
generator will give cannot be digested: it warns, naming the variable. A helper function
defined in the outer function is code (in the fingerprint already): what *it* captured
counts in turn.

Which cells count is decided once per code object (:data:`_plans`): the usual closure, over
the parameters alone (a sweep's ``i``), costs a dict lookup per task and records nothing.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import sys
import types
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING

from . import fingerprint as _fp
from ._bytecode import written_cells
from .files import CAPTURED

if TYPE_CHECKING:
    from .task import TaskFamily

__all__ = ["captured_values", "plain"]

_Plan = tuple[tuple[int, ...], bool]
"""The closure cells of a code object that count (their indexes), and whether its functions
are made by the outer function (so that their parameters' defaults count too, as do those
of any function made by a call, such as a factory's)."""

_plans: dict[types.CodeType, _Plan] = {}
"""Code object of an inner function (or of a helper it captured) -> its :data:`_Plan`."""

plain: set[types.CodeType] = set()
"""Code objects of inner functions none of whose closure cells count: such a function
without defaults has nothing to record (the fast path of :func:`checkpoint.graph.expand`)."""

_trees: dict[types.CodeType, tuple[frozenset[types.CodeType], frozenset[str]]] = {}
"""Outer function's code -> (the code objects nested in it, its parameters that are never
rebound or changed in place)."""


def captured_values(family: TaskFamily[..., object], inner: object) -> dict[str, str] | None:
    """``{"captured:<name>": digest}`` of the values that the inner function ``inner`` of a
    task of ``family`` captured from its outer function, or ``None`` when none counts."""
    if family.version is not None or family.is_class:
        return None
    outer = inspect.unwrap(family.fn)
    outer_code = getattr(outer, "__code__", None)
    if not isinstance(outer_code, types.CodeType):
        return None
    found: list[tuple[str, object]] = []
    _collect(inner, "", outer_code, found, set())
    if found:
        shared = _module_objects(outer, family)
        found = [(label, value) for label, value in found if id(value) not in shared]
    if not found:
        return None
    return _digests(found, outer, family)


_IMMUTABLE = (*_fp._CONSTANT_TYPES, tuple, frozenset)

_shared: dict[str, tuple[int, frozenset[int]]] = {}
"""Module name -> (graph expansion, the ids of its mutable module-level objects)."""


def _module_objects(outer: Callable[..., object], family: TaskFamily[..., object]) -> frozenset[int]:
    """The ids of the mutable objects bound at the top of the outer function's module that
    count there, once per module and graph expansion: such an object reached through the
    closure (``memo = MEMO``, ``rng = RNG``, ``return MODEL.predict``) is a module-level
    value, and counts as one does in the fingerprint (by its content, a generator by its
    assignment), not as a value the outer function made. Not one that the functions of the
    module change (a config a helper loads lazily, ``global _CFG; _CFG = json.load(...)``,
    or fills, ``_CFG.update(...)``): the fingerprint counts that one by its assignment, as
    state, so its content counts here."""
    namespace = getattr(outer, "__globals__", {})
    name = str(namespace.get("__name__", ""))
    epoch = sys.modules[family.__module__]._epoch  # (checkpoint.task)
    known = _shared.get(name)
    if known is None or known[0] != epoch:
        changed = _changed_globals(namespace)
        ids = frozenset(id(v) for k, v in list(namespace.items())
                        if not isinstance(v, (_IMMUTABLE, types.ModuleType, type, types.FunctionType))
                        and (k not in changed or _fp._stateful(v)))
        known = _shared[name] = (epoch, ids)
    return known[1]


def _changed_globals(namespace: Mapping[str, object]) -> set[str]:
    """The globals of a module that its functions (and its classes' methods) change: rebind
    (``global X``) or change in place (``X.update(...)``, ``X[k] = v``)."""
    changed: set[str] = set()
    for value in list(namespace.values()):
        functions = _fp._class_functions(value) if isinstance(value, type) else [value]
        for fn in functions:
            if isinstance(fn, types.FunctionType) and fn.__globals__ is namespace:
                changed.update(name for kind, name, _ in _fp.code_reads(fn.__code__) if kind == "w")
    return changed


def _plan(code: types.CodeType, outer: types.CodeType) -> _Plan:
    plan = _plans.get(code)
    if plan is None:
        nested, pure = _tree(outer)
        direct = any(c is code for c in outer.co_consts)
        free = pure if direct else frozenset()  # deeper: its cells are another function's
        made_here = code in nested
        # A cell the code changes is state, unless the outer function made the function (and
        # so the cell) in this very call: then its value before the inner function runs is
        # the outer function's, as any other. (`__class__`: the class of a method's super().)
        state = (frozenset() if made_here else written_cells(code)) | {"__class__"}
        plan = _plans[code] = (
            tuple(i for i, name in enumerate(code.co_freevars) if name not in free and name not in state),
            made_here)
    return plan


def _tree(outer: types.CodeType) -> tuple[frozenset[types.CodeType], frozenset[str]]:
    found = _trees.get(outer)
    if found is None:
        nested: set[types.CodeType] = set()
        stack = [outer]
        while stack:
            for const in stack.pop().co_consts:
                if isinstance(const, types.CodeType):
                    nested.add(const)
                    stack.append(const)
        count = outer.co_argcount + outer.co_kwonlyargcount
        count += bool(outer.co_flags & inspect.CO_VARARGS) + bool(outer.co_flags & inspect.CO_VARKEYWORDS)
        # A parameter the outer function (or a function in it) rebinds or changes in place
        # (`seed = seed + offset()`, `opts["x"] = ...`) is no longer its argument alone.
        changed = written_cells(outer)
        pure = frozenset(name for name in outer.co_varnames[:count] if name not in changed)
        found = _trees[outer] = (frozenset(nested), pure)
    return found


def _collect(fn: object, prefix: str, outer: types.CodeType, found: list[tuple[str, object]],
             seen: set[int]) -> None:
    """Add to ``found`` the ``(label, value)`` of what counts in ``fn``: its closure cells,
    its defaults when the outer function made it, and the same for the helpers it captured
    that the outer function defined (their code is the outer function's)."""
    if id(fn) in seen:
        return
    seen.add(id(fn))
    if isinstance(fn, partial):  # functools.partial(fit, cfg): its arguments were captured
        found += [(f"{prefix}<partial argument {i}>", v) for i, v in enumerate(fn.args)]
        found += [(f"{prefix}{k}", v) for k, v in sorted(fn.keywords.items())]
        _collect(fn.func, prefix, outer, found, seen)
        return
    if isinstance(fn, types.MethodType):  # Fit(k).run: what it is bound to was captured
        found.append((f"{prefix}<object of {fn.__func__.__name__}>", fn.__self__))
        _collect(fn.__func__, prefix, outer, found, seen)
        return
    if not isinstance(fn, types.FunctionType):
        if isinstance(fn, _fp._CODE_TYPES):  # a class, a builtin: code, not a value
            return
        try:
            wrapped = inspect.unwrap(fn)  # type: ignore[arg-type]
        except ValueError:  # a chain of __wrapped__ without end
            wrapped = fn
        if wrapped is not fn:  # a wrapper (jit, lru_cache): what it wraps
            _collect(wrapped, prefix, outer, found, seen)
        else:  # Fit(k), with a __call__: a value, what the outer function put into it
            found.append((f"{prefix}<{type(fn).__qualname__} object>", fn))
        return
    code = fn.__code__
    cells, made_here = _plan(code, outer)
    if not cells and not prefix:
        plain.add(code)
    closure = fn.__closure__ or ()
    for i in cells:
        try:
            value = closure[i].cell_contents
        except ValueError:  # not bound yet
            continue
        label = prefix + code.co_freevars[i]
        if isinstance(value, (types.FunctionType, partial)) and _made_by(value, outer):
            _collect(value, label + ".", outer, found, seen)
        else:
            found.append((label, value))
    if made_here or "<locals>" in fn.__qualname__:  # made by a call (a factory's): so were they
        name = fn.__name__
        defaults = fn.__defaults__ or ()
        first = code.co_argcount - len(defaults)
        found += [(f"{prefix}{code.co_varnames[first + i]} (the default of {name})", v)
                  for i, v in enumerate(defaults)]
        found += [(f"{prefix}{k} (the default of {name})", v)
                  for k, v in sorted((fn.__kwdefaults__ or {}).items())]


def _made_by(fn: object, outer: types.CodeType) -> bool:
    """Whether a captured function is one the outer function defined (or a partial of one)."""
    while isinstance(fn, partial):
        fn = fn.func
    return isinstance(fn, types.FunctionType) and fn.__code__ in _tree(outer)[0]


def _digests(found: list[tuple[str, object]], outer: Callable[..., object],
             family: TaskFamily[..., object]) -> dict[str, str]:
    """Each value's digest: its text as a module-level value's (see the module docstring),
    with the code it leads to (the project classes of its objects, the functions it
    holds). Literals and containers of them, the usual case, need no walk of the code."""
    from .task import TaskFamily

    roots = _roots(family)
    out = {}
    values: _Captured | None = None
    for label, value in found:
        text = _fp.constant_text(value, 0, roots)
        if text is None and isinstance(value, types.ModuleType):
            text = f"<module {value.__name__}>"  # its code: the imports the fingerprint follows
        if text is None:
            if values is None:
                values = _Captured(_fp._Walk(outer, lambda obj: isinstance(obj, TaskFamily), family.name))
            walk = values.walk
            before = {**walk.own, **walk.other}
            text = values.value_text(value, label, {}, False)
            values.finish()
            new = {**walk.own, **walk.other}
            text += "".join(f"\n{new[k]}" for k in sorted(new.keys() - before.keys()))
        out[CAPTURED + label] = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    return out


_family_roots: dict[str, tuple[int, tuple[str, ...]]] = {}
"""Family name -> (graph expansion, the project directory as paths in values spell it)."""


def _roots(family: TaskFamily[..., object]) -> tuple[str, ...]:
    """What :class:`checkpoint.fingerprint._Walk` finds as ``roots``, once per family and
    graph expansion (it looks at the file system)."""
    epoch = sys.modules[family.__module__]._epoch  # (checkpoint.task; `task` is the decorator)
    known = _family_roots.get(family.name)
    if known is None or known[0] != epoch:
        root = _fp.project_root(family.module)
        known = _family_roots[family.name] = (epoch, _fp._roots(root, family.module))
    return known[1]


class _Captured(_fp._Values):
    """Texts of captured values: those of module-level values, but a captured value has no
    assignment of its own to fall back on (it is the outer function's source, which counts
    already), and one that cannot be fingerprinted warns naming the variable."""

    def value_text(self, value: object, label: str, namespace: Mapping[str, object], state: bool) -> str:
        if not namespace and _fp._stateful(value):
            now = _state(value)
            if now is _RANDOM:
                return f"<{type(value).__qualname__}>"  # random by design: nothing to track
            if now is None:  # an open file, a generator: what they will give is unknown
                self.warn(value, label, namespace)
                return f"<{type(value).__qualname__}: cannot be fingerprinted>"
            return f"<{type(value).__qualname__} in state {super().value_text(now, label, {}, False)}>"
        return super().value_text(value, label, namespace, state)

    def warn(self, value: object, label: str, namespace: Mapping[str, object]) -> None:
        if namespace:  # a module-level value that captured code reads
            super().warn(value, label, namespace)
            return
        key = (self.walk.family, CAPTURED + label)
        if key in _fp._warned:
            return
        _fp._warned.add(key)
        self._warn(
            f"Task {self.walk.family} reads {label!r} ({type(value).__qualname__}), a value its "
            "outer function computed for its inner function, which cannot be fingerprinted: "
            "changing it will not re-run the task. Compute it in the inner function, make it a "
            "literal, a dataclass or another picklable value, or pin the task's code with "
            "@task(version=...) and bump the version when it changes.", self.walk.module)


_RANDOM = object()
"""What :func:`_state` returns for a generator that is random by design (``SystemRandom``)."""


def _state(value: object) -> object:
    """The state of a random generator as the outer function made it (before the inner
    function draws from it: so the seed it was made with), :data:`_RANDOM` for one without
    a state, ``None`` for what has none to take (an open file, a generator)."""
    if isinstance(value, (io.IOBase, types.GeneratorType, types.CoroutineType)):
        return None
    random = sys.modules.get("random")
    if random is not None and isinstance(value, random.Random):
        try:
            return value.getstate()
        except NotImplementedError:
            return _RANDOM
    value = getattr(value, "bit_generator", value)  # NumPy: a Generator's is its bit generator's
    get_state = getattr(value, "get_state", None)  # a legacy RandomState
    if callable(get_state):
        return get_state(legacy=False)
    return getattr(value, "state", None)  # a bit generator, a SeedSequence


_arguments_only: dict[types.CodeType, bool] = {}
"""Code object of an inner function -> whether its closure holds its outer function's
unchanged parameters alone (see :func:`only_arguments`)."""


def only_arguments(family: TaskFamily[..., object], fn: object) -> bool:
    """Whether the inner function ``fn`` of a task of ``family`` holds nothing but its outer
    function's parameters, unchanged: no other value the outer function computed (captured
    or not counted), no default. Only then does calling the outer function again with the
    task's arguments, in another process (a pool's worker, a Dask worker with its own
    environment and files), make the function that was planned."""
    if type(fn) is not types.FunctionType or fn.__defaults__ is not None or fn.__kwdefaults__ is not None:
        return False
    code = fn.__code__
    known = _arguments_only.get(code)
    if known is None:
        outer = getattr(inspect.unwrap(family.fn), "__code__", None)
        known = _arguments_only[code] = (
            isinstance(outer, types.CodeType) and any(c is code for c in outer.co_consts)
            and set(code.co_freevars) <= _tree(outer)[1])
    return known
