"""A mypy plugin that makes mypy see a class decorated with ``@task`` as the task family it is.

mypy ignores what a class decorator returns (python/mypy#3135), so without this plugin it
takes ``Choose(6, 3)`` for an instance of the class ``Choose`` rather than a ``Task[int]``
(pyright needs no plugin). Enable it in the mypy configuration::

    [tool.mypy]                       # pyproject.toml
    plugins = ["checkpoint.mypy"]

    [mypy]                            # mypy.ini / setup.cfg
    plugins = checkpoint.mypy

Then, for a class task ``Choose`` whose ``run`` returns ``int``:

* ``Choose(6, 3)`` is a ``Task[int]`` (``.run()``, ``.clear()``, ``.id``, passing it where a
  ``Task[int]`` is expected, ``checkpoint.run([...])``), its arguments still checked against
  ``__init__``;
* the family's own attributes are there on the class: ``Choose.clear()``, ``Choose.name``.

How: a class-decorator hook marks ``@task`` classes (the mark is kept in mypy's cache) and
gives them :class:`checkpoint.task.ClassTaskFamily` as their metaclass (unless they have
another metaclass); a function hook turns each constructor call of a marked class into
``Task[R]``, ``R`` being what its ``run`` method returns.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy.expandtype import expand_type_by_instance
from mypy.maptype import map_instance_to_supertype
from mypy.nodes import Decorator, FuncDef, TypeInfo
from mypy.plugin import ClassDefContext, FunctionContext, Plugin
from mypy.types import AnyType, CallableType, Instance, Type, TypeOfAny, get_proper_type

TASK_DECORATOR = "checkpoint.task.task"
TASK = "checkpoint.task.Task"
CLASS_FAMILY = "checkpoint.task.ClassTaskFamily"
MARK = "checkpoint"


class CheckpointPlugin(Plugin):
    """See the module docstring."""

    def get_class_decorator_hook(self, fullname: str) -> Callable[[ClassDefContext], None] | None:
        return _mark_task_class if fullname == TASK_DECORATOR else None

    def get_function_hook(self, fullname: str) -> Callable[[FunctionContext], Type] | None:
        sym = self.lookup_fully_qualified(fullname)
        if sym is not None and isinstance(sym.node, TypeInfo) and MARK in sym.node.metadata:
            return self._construct_task
        return None

    def _construct_task(self, ctx: FunctionContext) -> Type:
        """``Cls(...)`` of a class task: a ``Task[R]`` where ``Cls.run`` returns ``R``."""
        instance = get_proper_type(ctx.default_return_type)
        # Looked up here rather than with ctx.api.named_generic_type: in the package
        # namespace the name `checkpoint.task` is the decorator, not the module.
        task = self.lookup_fully_qualified(TASK)
        if not isinstance(instance, Instance) or task is None or not isinstance(task.node, TypeInfo):
            return ctx.default_return_type
        return Instance(task.node, [_run_result(instance)])


def _mark_task_class(ctx: ClassDefContext) -> None:
    info = ctx.cls.info
    info.metadata[MARK] = {"task_class": True}
    meta = info.metaclass_type
    if meta is None or meta.type.fullname in ("builtins.type", CLASS_FAMILY):
        family = ctx.api.lookup_fully_qualified_or_none(CLASS_FAMILY)
        if family is not None and isinstance(family.node, TypeInfo):
            info.declared_metaclass = info.metaclass_type = Instance(family.node, [])


def _run_result(instance: Instance) -> Type:
    """What ``run`` returns on ``instance`` (``Any`` when unannotated or not a plain method)."""
    method = instance.type.get_method("run")
    signature: Type | None = None
    if isinstance(method, FuncDef):
        signature = method.type
    elif isinstance(method, Decorator):
        signature = method.var.type
    proper = get_proper_type(signature)
    if method is None or not isinstance(proper, CallableType):
        return AnyType(TypeOfAny.unannotated)
    owner = map_instance_to_supertype(instance, method.info)
    return expand_type_by_instance(proper.ret_type, owner)


def plugin(version: str) -> type[Plugin]:
    """mypy's entry point."""
    return CheckpointPlugin
