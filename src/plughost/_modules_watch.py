"""What one load changed in ``sys.modules``, found without reading all of it.

With thousands of namespaces loaded, ``sys.modules`` holds tens of thousands of
keys, nearly all of them namespaces' modules. A load compares only two parts
of it, so its cost follows the host's modules and its own, not the number of
namespaces loaded:

* **The host's keys** (every key outside ``plughost_ns.``: the standard
  library, installed packages, plughost itself, the root package): each
  one's object when the load began, compared by identity when it ends.
  :class:`HostKeys` knows them: those present when the loader was imported,
  every module imported since (the loader's finder is the first on
  ``sys.meta_path``, and a load that puts one before it is undone), and those
  a load added by hand. A key that host code puts into ``sys.modules`` by hand
  between loads is known from the next rescan on (a sweep of the loader).
* **The tail**: a dict keeps insertion order, so every key added while the
  load ran (or removed and added again) comes after a marker module the load
  put last into ``sys.modules`` when it began. The keys after it are read
  from the end, in C.

The caller judges what it finds (see :mod:`plughost.loader`). A key of
another namespace rebound in place, or removed, is in neither part; the
namespace whose key it is finds it where its code imports the name bare.

The comparisons by identity here also serve the loader's checks of
``sys.path``, ``sys.meta_path`` and :mod:`builtins` around each bundle file.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TypeGuard

MISSING = object()
"""Stands for a key that a dict does not hold (``None`` is a value ``sys.modules`` may hold)."""

MARKER_PREFIX = "plughost_ns._x__load_"
"""The keys of load markers: under the root package, and no namespace's (a reserved prefix)."""

_Modules = MutableMapping[object, object]


# -- comparing by identity (also for sys.path and builtins, which a load watches too) -----


def same_objects(before: Iterable[object], now: Iterable[object]) -> bool:
    """Whether ``now`` starts with the very objects of ``before``, in order.

    Compared by identity, in C: no object's ``__eq__`` has a say, so a module
    that claims to equal the one it replaced is still a change.
    """
    return all(map(operator.is_, before, now))


def starts_with(now: Mapping[str, object], before: Mapping[str, object]) -> bool:
    """Whether ``now`` holds the entries of ``before`` first, in their order, the same objects.

    A dict keeps its insertion order, and replacing a value keeps its place,
    so this holds exactly when ``now`` is ``before`` plus entries added after.
    """
    return (
        len(now) >= len(before)
        and same_objects(before, now)
        and same_objects(before.values(), now.values())
    )


def changed_keys(before: Mapping[str, object], now: Mapping[str, object]) -> set[str]:
    """The keys added, removed or bound to another object between ``before`` and ``now``."""
    return {
        key
        for key in before.keys() | now.keys()
        if before.get(key, MISSING) is not now.get(key, MISSING)
    }


def put_back(now: dict[str, object], before: Mapping[str, object], keys: list[str]) -> list[str]:
    """Make ``keys`` of ``now`` what they were in ``before`` (absent included); return them."""
    for key in keys:
        was = before.get(key, MISSING)
        if was is MISSING:
            now.pop(key, None)
        else:
            now[key] = was
    return keys


# -- the host's keys and the tail ---------------------------------------------------------


class HostKeys:
    """The keys outside the namespaces that loads watch, in the order they were found.

    Only ``str`` keys count, as for the rest of the loader's checks.
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._keys: dict[str, None] = {}
        self._reader: tuple[tuple[str, ...], Callable[[_Modules], tuple[object, ...]]] | None = None

    def rescan(self, modules: Iterable[object]) -> None:
        """Take the host's keys afresh from all of ``modules`` (costs a pass over it)."""
        self._keys = dict.fromkeys(key for key in modules if self._is_host_key(key))

    def note(self, key: object) -> None:
        """Know ``key`` from now on, if it is a host key (one dict store: no lock; a note
        that races with a rescan may be lost, and the key is known from the next one)."""
        if self._is_host_key(key) and key not in self._keys:
            self._keys[key] = None

    def snapshot(self, modules: _Modules) -> tuple[tuple[str, ...], list[object]]:
        """The known host keys and their objects in ``modules`` now.

        A key no longer in ``modules`` is forgotten (an import that failed, a
        key removed since); importing it again makes it known again.
        """
        keys = tuple(self._keys)
        try:
            return keys, list(self.reader(keys)(modules))
        except KeyError:
            present = tuple(key for key in keys if key in modules)
            self._keys = dict.fromkeys(present)
            return present, [modules[key] for key in present]

    def reader(self, keys: tuple[str, ...]) -> Callable[[_Modules], tuple[object, ...]]:
        """A function that reads the objects of ``keys`` (raising KeyError for a missing one)."""
        known = self._reader
        if known is not None and known[0] == keys:
            return known[1]
        # One C call reads them all; itemgetter of one key returns it bare, not in a tuple.
        read = operator.itemgetter(*keys) if len(keys) > 1 else functools.partial(_each, keys)
        self._reader = (keys, read)
        return read

    def _is_host_key(self, key: object) -> TypeGuard[str]:
        # Exactly str: a subclass's own methods would run here, under the loader's lock.
        return type(key) is str and not key.startswith(self._prefix)


def _each(keys: tuple[str, ...], modules: _Modules) -> tuple[object, ...]:
    return tuple(modules[key] for key in keys)


@dataclass
class LoadWatch:
    """What one load compares ``sys.modules`` with once its modules have run.

    ``host_keys`` and ``host`` are the host's keys and their objects when the
    load began (another load that puts a key back corrects ``host``), and
    ``read`` reads them again; ``marker`` is the key of the module it put
    last into ``sys.modules`` then, and ``length`` how many keys it held
    with it. ``began`` is where it began in the order of
    load events: a namespace whose load finished earlier was settled then;
    ``changed_meanwhile`` the keys that other loads found changed, and put
    back, while this one was under way.
    """

    host_keys: tuple[str, ...]
    host: list[object]
    read: Callable[[_Modules], tuple[object, ...]]
    marker: str
    marker_module: ModuleType
    length: int
    began: int
    changed_meanwhile: set[str] = field(default_factory=set)

    def host_value(self, key: str) -> object:
        """The object ``key`` held when the load began (:data:`MISSING` if none or unknown)."""
        try:
            return self.host[self.host_keys.index(key)]
        except ValueError:
            return MISSING

    def correct_host(self, key: str, value: object) -> None:
        """Take ``value`` as what ``key`` held when the load began (another load put it back)."""
        with contextlib.suppress(ValueError):
            self.host[self.host_keys.index(key)] = value


def start_watch(host_keys: HostKeys, began: int) -> LoadWatch:
    """Take the host's keys and put a marker last into ``sys.modules``; call it under the lock."""
    modules: _Modules = sys.modules  # type: ignore[assignment]
    keys, values = host_keys.snapshot(modules)
    # Not to be guessed: a key planted under it beforehand would keep an earlier place.
    marker = f"{MARKER_PREFIX}{began}_{secrets.token_hex(8)}"
    module = ModuleType(marker, "Marks where one load began in sys.modules.")
    modules.pop(marker, None)
    modules[marker] = module
    return LoadWatch(keys, values, host_keys.reader(keys), marker, module, len(modules), began)


def host_changes(watch: LoadWatch) -> list[tuple[str, object]]:
    """The host keys removed or bound to another object since ``watch`` began, with
    the object each held then."""
    modules: _Modules = sys.modules  # type: ignore[assignment]
    try:
        if all(map(operator.is_, watch.host, watch.read(modules))):
            return []
    except KeyError:
        pass
    return [
        (key, was)
        for key, was in zip(watch.host_keys, watch.host, strict=True)
        if modules.get(key, MISSING) is not was
    ]


def keys_added(watch: LoadWatch) -> list[object] | None:
    """The keys after ``watch``'s marker, last first; None if the marker is not where it was put.

    The host never touches a marker, so None means that code that ran
    meanwhile (the load's own, most likely) moved, rebound or removed it. A
    marker moved to the end (taken out and put back) hides the keys added
    before the move: fewer keys follow it than ``sys.modules`` gained. Code
    that also removes as many keys that were there before balances the count:
    like the rest of the load's checks, this makes accidents and careless
    code evident; it does not stand against hostile code, which takes an OS
    sandbox.
    """
    modules: _Modules = sys.modules  # type: ignore[assignment]
    marker = watch.marker
    # Read first: keys other threads add after it only make the tail longer.
    length = len(modules)
    # In C, so no other thread changes the dict between two steps of the scan.
    after = list(itertools.takewhile(functools.partial(operator.is_not, marker), reversed(modules)))
    if (
        len(after) >= length
        or modules.get(marker) is not watch.marker_module
        or len(after) < length - watch.length
    ):
        return None
    return after


def end_watch(watch: LoadWatch) -> None:
    """Take the load's marker out of ``sys.modules``; call it under the lock."""
    sys.modules.pop(watch.marker, None)
