"""Finding what keeps an unloaded namespace's modules alive.

Starting from a surviving module (or its globals), walk the garbage
collector's referrer graph upwards through objects that belong to the
namespace itself (its functions, classes, instances, their dicts) and through
plain containers (lists, tuples, cells, bound methods), and stop at the first
object outside: a global of another module, an attribute of a foreign object,
a frame of a running thread or of a stored traceback. Those are the holders.
"""

from __future__ import annotations

import gc
import reprlib
import sys
import threading
import weakref
from collections import deque
from types import (
    AsyncGeneratorType,
    CellType,
    CoroutineType,
    FrameType,
    FunctionType,
    GeneratorType,
    GetSetDescriptorType,
    MemberDescriptorType,
    MethodType,
    ModuleType,
)
from typing import Any

_PASS_THROUGH = (
    tuple,
    list,
    set,
    frozenset,
    deque,
    CellType,
    MethodType,
    classmethod,
    staticmethod,
    property,
    GetSetDescriptorType,
    MemberDescriptorType,
)
_INTERNAL_MODULES = frozenset({__name__, "plughost.loader"})
_MAX_VISITED = 500
_MAX_HOLDERS = 5
_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


def find_leaks(
    watched: list[tuple[str, list[weakref.ref[Any]]]], package_name: str
) -> list[tuple[str, list[str]]]:
    """Return ``(module name, holders)`` for each watched module still alive.

    Each entry of ``watched`` holds weak references to a module and to objects
    that live exactly as long as its globals. A garbage collection runs
    only if something is still alive after reference counting, a full one
    only if something is still alive after a young one.
    """
    alive = _alive(watched)
    # Young code dies in a young collection, which costs little; only what survives
    # that (code loaded long ago, or leaked) pays for a full one.
    for generation in (1, 2):
        if not alive:
            return []
        gc.collect(generation)
        alive = _alive(alive)
    leaks = []
    for name, refs in alive:
        objects = [obj for r in refs if (obj := r()) is not None]
        if objects:
            leaks.append((name, _holders(objects, package_name)))
        del objects
    return leaks


def _alive(
    watched: list[tuple[str, list[weakref.ref[Any]]]],
) -> list[tuple[str, list[weakref.ref[Any]]]]:
    return [(name, refs) for name, refs in watched if any(r() is not None for r in refs)]


class _Walk:
    def __init__(self, package_name: str) -> None:
        self.package_name = package_name
        self.ignored: set[int] = set()

    def owned(self, name: object) -> bool:
        return isinstance(name, str) and (
            name == self.package_name or name.startswith(self.package_name + ".")
        )

    def is_module_globals(self, obj: dict[Any, Any]) -> bool:
        return self.owned(obj.get("__name__")) and "__spec__" in obj

    def belongs(self, obj: object) -> bool:
        """True for the namespace's modules, globals, functions, classes and instances."""
        if isinstance(obj, ModuleType):
            return self.owned(obj.__name__)
        if isinstance(obj, FunctionType):
            return self.is_module_globals(obj.__globals__)
        if isinstance(obj, type):
            return self.owned(getattr(obj, "__module__", None))
        if isinstance(obj, dict) and self.is_module_globals(obj):
            return True
        if obj.__class__.__name__ == "ModuleSpec":
            return self.owned(getattr(obj, "name", None))
        return self.owned(getattr(type(obj), "__module__", None))


def _holders(objects: list[object], package_name: str) -> list[str]:
    walk = _Walk(package_name)
    running, snapshots = _running_references()
    queue: deque[object] = deque(objects)
    walk.ignored.update({id(queue), id(objects), id(running), *snapshots})
    seen = {id(obj) for obj in objects}
    holders: list[str] = []
    while queue and len(seen) < _MAX_VISITED and len(holders) < _MAX_HOLDERS:
        child = queue.popleft()
        holders += [h for h in running.get(id(child), ()) if h not in holders]
        referrers = gc.get_referrers(child)
        walk.ignored.add(id(referrers))
        for referrer in referrers:
            if id(referrer) in walk.ignored or id(referrer) in seen:
                continue
            description = _describe_external(walk, referrer, child)
            if description is None:
                seen.add(id(referrer))
                queue.append(referrer)
            elif description not in holders:
                holders.append(description)
        del referrers
    return holders or ["unknown holder (not found through the garbage collector)"]


def _running_references() -> tuple[dict[int, list[str]], set[int]]:
    """Map ids of objects that running frames refer to (locals, globals) to descriptions.

    The garbage collector does not see the locals of a running frame, so every
    thread's stack is read directly. The objects stay referenced by their
    frames for as long as the walk needs the ids. Also returns the ids of the
    ``f_locals`` snapshots this creates, which are not holders of their own.
    """
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    found: dict[int, list[str]] = {}
    snapshots: set[int] = set()
    for ident, top in sys._current_frames().items():
        frame: FrameType | None = top
        while frame is not None:
            if frame.f_globals.get("__name__") not in _INTERNAL_MODULES:
                code = frame.f_code
                where = f"{code.co_name}() at {code.co_filename}:{frame.f_lineno}"
                thread = names.get(ident, str(ident))
                local_values = frame.f_locals
                snapshots.add(id(local_values))
                for name, value in local_values.items():
                    found.setdefault(id(value), []).append(
                        f"local {name!r} of {where} in thread {thread!r}"
                    )
                found.setdefault(id(frame.f_globals), []).append(
                    f"running frame of {where} in thread {thread!r}"
                )
            frame = frame.f_back
    return found, snapshots


def _describe_external(walk: _Walk, holder: object, child: object) -> str | None:
    """Describe ``holder`` if it is outside the namespace; None means keep walking up."""
    if isinstance(holder, FrameType):
        if holder.f_globals.get("__name__") in _INTERNAL_MODULES:
            return None
        code = holder.f_code
        where = f"{code.co_name}() at {code.co_filename}:{holder.f_lineno}"
        return f"frame of {where} (a stored traceback or a suspended generator)"
    suspended = _suspended_frame(holder)
    if suspended is not None:
        code = suspended.f_code
        where = f"{code.co_name}() at {code.co_filename}:{suspended.f_lineno}"
        names = [name for name, value in suspended.f_locals.items() if value is child]
        if names:
            return f"local {names[0]!r} of suspended {type(holder).__name__} {where}"
        return f"suspended {type(holder).__name__} {where}"
    if isinstance(holder, _PASS_THROUGH) or walk.belongs(holder):
        return None
    if isinstance(holder, dict):
        return _describe_dict(walk, holder, child)
    return f"{type(holder).__module__}.{type(holder).__qualname__} {_short.repr(holder)}"


def _describe_dict(walk: _Walk, holder: dict[Any, Any], child: object) -> str | None:
    key = next((k for k, v in holder.items() if v is child), None)
    for owner in gc.get_referrers(holder):
        if not _owns_dict(owner, holder):
            continue
        if walk.belongs(owner):
            return None
        if isinstance(owner, ModuleType):
            return f"global {key!r} of module {owner.__name__}"
        return f"attribute {key!r} of {_short.repr(owner)}"
    return f"key {_short.repr(key)} of a dict"


def _suspended_frame(obj: object) -> FrameType | None:
    """The frame of a suspended coroutine or generator, which owns its locals."""
    if isinstance(obj, CoroutineType):
        return obj.cr_frame
    if isinstance(obj, GeneratorType):
        return obj.gi_frame
    if isinstance(obj, AsyncGeneratorType):
        return obj.ag_frame
    return None


def _owns_dict(owner: object, candidate: dict[Any, Any]) -> bool:
    if isinstance(owner, type):
        # A class shows its dict only through a mappingproxy that refers to it.
        return any(d is candidate for d in gc.get_referents(owner.__dict__))
    return getattr(owner, "__dict__", None) is candidate
