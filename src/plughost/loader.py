"""Load a bundle into a namespace, and unload it again.

How isolation works, without touching ``sys.path``:

* A meta path finder serves every key below ``plughost_ns.<namespace>`` from
  that namespace's bundle folder, and only while the namespace is loaded.
* Each namespace gets its own ``__builtins__`` mapping, shared by its modules:
  a copy of the real builtins whose ``__import__`` first resolves a bare name
  against the importing module's own bundle (known from the ``__name__`` in
  the globals every import statement passes): ``import helpers`` inside
  tenant acme's code imports ``plughost_ns.t_acme.helpers``. Lazy imports
  inside functions go through the same ``__builtins__``. What a bundle writes
  into it (``__builtins__["len"] = ...``) stays in its own namespace. Names the
  bundle does not define (stdlib, installed packages) import as usual and
  are shared. ``from . import helpers`` works because every top-level module
  is a submodule of the namespace package.
* ``agents`` is an alias of the bundle itself, and ``basic_agent`` /
  ``agents.basic_agent`` resolve to :mod:`plughost.agent` unless the bundle
  ships its own, so agent files written for other hosts load unchanged.

* Imports by name resolve the same way, at load and during a call:
  ``__import__("helpers")`` (without globals: the caller's are taken), and
  ``importlib.import_module("agents.basic_agent")``, which plughost wraps:
  called from a namespace's code, a bundle name means that namespace's module;
  from anywhere else, the wrapper is ``importlib.import_module`` itself.

Loads are tamper-evident:

* A bundle file that changes ``sys.path`` or ``sys.meta_path`` (a finder put
  before the loader's would serve other namespaces' keys), or rebinds a name
  of the :mod:`builtins` module (``builtins.__import__``, ``builtins.open``),
  gets a :class:`~plughost.errors.BundleWarning` and the change is undone.
* While a bundle loads, it may add ``sys.modules`` keys (its imports), but a
  host key (plughost's own modules, the standard library, installed
  packages, the root package) that it removes or binds to another object is
  put back and fails the load with :class:`~plughost.errors.ForeignModulesError`
  naming the keys. So does a key it adds under a namespace that is not loaded,
  or under one that had finished loading before it began, and a key of such a
  namespace that it takes out and puts back bound to another object; namespaces
  that load meanwhile change their own keys. This holds when a module fails
  after its change as well. Keys planted under a namespace's module names
  before it loads are dropped.
* A key of another namespace that a load rebinds in place, or removes, is not
  compared at the load: that would cost a pass over every namespace's keys
  at every load (see :mod:`plughost._modules_watch`). The namespace whose key
  it is finds it where its code imports the name bare (``import helpers``,
  ``importlib.import_module("helpers")``): its own module is put back, with a
  :class:`~plughost.errors.BundleWarning`, and its code gets it. The host
  takes a namespace's package from its load, not from ``sys.modules``.
* A load whose marker was moved (see :mod:`plughost._modules_watch`) is
  refused, and every namespace key is then judged as above, rebound ones
  included.
* Values are compared by identity, so a module that claims to equal the one
  it replaced is still a change. A key added that no module held before is
  taken for an import: a planted module under a name nothing imported yet is
  not told from one.
* What a load sees changed happened while it was under way, but other loads
  may have been under way too, and ``sys.modules`` does not record who wrote
  it: every load in flight since before the change is refused with it, so
  the one that did it always is. A load that began after the change is not.
  Imports elsewhere in the host meanwhile only add keys. The host removes
  keys only when it unloads a namespace (a tenant's code, a mod), under
  ``_lock`` and with that namespace's ``_active`` entry, or when it sweeps
  away keys of namespaces that are not loaded, and never a key outside the
  namespaces, so no removal of its own is taken for tampering.

Code that runs later, in a call, is not watched: in-process namespaces
separate names and make loads tamper-evident, they do not sandbox hostile
code: that takes OS-level isolation.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import os
import sys
import tempfile
import threading
import traceback
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable, TraversableResources
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any, cast

from ._codecache import CodeCache
from ._leaks import find_leaks
from ._modules_watch import (
    MARKER_PREFIX,
    MISSING,
    HostKeys,
    LoadWatch,
    changed_keys,
    end_watch,
    host_changes,
    keys_added,
    put_back,
    same_objects,
    start_watch,
    starts_with,
)
from .bundle import BundleIndex, ModuleEntry, extract_archive, index_bundle, is_archive
from .errors import (
    BundleLoadError,
    BundleRejectedError,
    BundleWarning,
    ForeignModulesError,
    NamespaceConflictError,
)
from .naming import ROOT_PACKAGE, Namespace

__all__ = ["Leak", "LoadedBundle", "UnloadReport", "code_cache", "load_bundle", "loaded_namespaces"]

_original_import = builtins.__import__
_PREFIX = ROOT_PACKAGE + "."
_COMPAT_BASIC_AGENT = "plughost.agent"

code_cache = CodeCache()
"""The compiled-code cache every namespace shares."""

_lock = threading.Lock()
_active: dict[str, _NamespaceImports] = {}  # package name -> namespace being or staying loaded
_unloads_since_sweep = 0
_SWEEP_AFTER = 32
"""Unloads, at least, between two sweeps of ``sys.modules`` for keys of unloaded namespaces."""
_host = HostKeys(_PREFIX)
"""The host's keys that loads watch; see :mod:`plughost._modules_watch`."""
_events = itertools.count()
"""Orders load starts and ends (taken under ``_lock``): a namespace settled before a load
began when its load ended at a lower number than that load began."""


@dataclass
class Leak:
    """A bundle module that outlived its unload, and what still holds it."""

    module_name: str
    holders: list[str]


@dataclass
class UnloadReport:
    """What an unload removed and whether all of it was garbage-collected.

    ``leaked`` is empty when every module object and module namespace was
    freed. ``verified`` is False until :meth:`check_freed` has run.
    """

    namespace: Namespace
    modules: list[str]
    leaked: list[Leak] = field(default_factory=list)
    verified: bool = False
    _watched: list[tuple[str, list[weakref.ref[Any]]]] = field(
        default_factory=list, repr=False, compare=False
    )

    def check_freed(self) -> list[Leak]:
        """Confirm that every module and its globals were freed; return what survived.

        Reads weak references taken at the unload, after a garbage collection
        if anything is still alive then: a young one, and a full one only if
        something survives that (which blocks the calling thread for
        milliseconds on a large heap: run it off the event loop).
        What survived is listed in ``leaked`` with what holds it. Never raises
        for a leak; checking twice gives the same answer.
        """
        if not self.verified:
            found = find_leaks(self._watched, self.namespace.package_name)
            self.leaked = [Leak(name, holders) for name, holders in found]
            self._watched = []
            self.verified = True
        return self.leaked


class _FolderResources(TraversableResources):
    """``importlib.resources`` access to a bundle folder, for the namespace package."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def files(self) -> Traversable:
        return self._root


class _PackageLoader(importlib.abc.Loader):
    """Creates the namespace package of a bundle that has no ``__init__.py`` of its own."""

    def __init__(self, root: Path, own: dict[str, object]) -> None:
        self._root = root
        self._own = own

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        self._own[module.__name__] = module

    def is_package(self, fullname: str) -> bool:
        return True

    def get_resource_reader(self, fullname: str) -> TraversableResources:
        return _FolderResources(self._root)


class _ModuleLoader(importlib.machinery.SourceFileLoader):
    """Executes one bundle file with its namespace's ``__builtins__`` and the shared code cache."""

    def __init__(
        self,
        fullname: str,
        path: str,
        namespace_builtins: dict[str, Any],
        sources: Mapping[str, tuple[bytes, bytes]],
        own: dict[str, object],
    ) -> None:
        super().__init__(fullname, path)
        self._builtins = namespace_builtins
        self._sources = sources
        self._own = own

    def get_code(self, fullname: str) -> CodeType:
        known = self._sources.get(self.path)
        if known is not None:
            return code_cache.code_for(known[0], self.path, known[1])
        return code_cache.code_for(self.get_data(self.path), self.path)

    def exec_module(self, module: ModuleType) -> None:
        code = self.get_code(module.__name__)
        module.__dict__["__builtins__"] = self._builtins
        path_before = sys.path[:]
        finders_before = sys.meta_path[:]
        builtins_before = vars(builtins).copy()
        try:
            exec(code, module.__dict__)
            # What its key holds now: a module may put another object in its own place.
            self._own[module.__name__] = sys.modules.get(module.__name__, module)
        finally:
            # Both are shared by every namespace and the host itself.
            if not (len(sys.path) == len(path_before) and same_objects(path_before, sys.path)):
                sys.path[:] = path_before
                self._undone("sys.path")
            finders = sys.meta_path
            if not (len(finders) == len(finders_before) and same_objects(finders_before, finders)):
                # A finder put before the loader's would serve other namespaces' keys.
                sys.meta_path[:] = finders_before
                self._undone("sys.meta_path")
            now = vars(builtins)
            if not (len(now) == len(builtins_before) and starts_with(now, builtins_before)):
                # A name deleted and bound again to the same object moves, and changes nothing.
                names = put_back(now, builtins_before, sorted(changed_keys(builtins_before, now)))
                if names:
                    self._undone(", ".join(f"builtins.{name}" for name in names))

    def _undone(self, what: str) -> None:
        warnings.warn(
            BundleWarning(f"{self.path} changed {what} while loading; the change was undone"),
            stacklevel=3,
        )


@dataclass(frozen=True)
class Libraries:
    """A tenant's libraries a namespace imports under its own keys, like its own files.

    ``root`` is an environment's folder (see :mod:`plughost.environments`);
    ``names`` its top-level modules and packages the namespace takes from it.
    Its modules load when imported, not with the bundle.
    """

    root: Path
    names: frozenset[str]

    def entry(self, stem: str) -> ModuleEntry | None:
        """The module ``stem`` (``"toolz.curried"``) of these libraries, if it is one."""
        parts = stem.split(".")
        if parts[0] not in self.names or not all(part.isidentifier() for part in parts):
            return None
        folder = self.root.joinpath(*parts)
        if (folder / "__init__.py").is_file():
            return ModuleEntry(stem, folder / "__init__.py", True)
        single = folder.with_name(f"{parts[-1]}.py")
        return ModuleEntry(stem, single, False) if single.is_file() else None


class _NamespaceImports:
    """What the import machinery needs about one namespace: its files and its sibling names."""

    def __init__(
        self, namespace: Namespace, index: BundleIndex, libraries: Libraries | None = None
    ) -> None:
        self.namespace = namespace
        self.index = index
        self.libraries = libraries
        self.package_name = namespace.package_name
        # Its own files come first: a bundle module shadows a library of the same name.
        self._top_names = index.top_names | (libraries.names if libraries else frozenset())
        self._entries = {
            namespace.module_name(stem): entry for stem, entry in index.modules.items()
        }
        # Its own copy, so that what one bundle writes into its ``__builtins__`` stays its own.
        self.builtins: dict[str, Any] = {**vars(builtins), "__import__": _bundle_import}
        self.watch: LoadWatch | None = None
        self.settled_at: int | None = None  # where its load finished, in the order of _events
        # Its sys.modules keys, in the order they appeared: what an unload removes. Each
        # maps to the object its import left there (None while that import runs).
        self.keys: dict[str, object] = {}
        self.done = threading.Event()
        self.loaded: LoadedBundle | None = None
        self.error: BaseException | None = None

    def spec_for(self, fullname: str) -> importlib.machinery.ModuleSpec | None:
        spec = self._spec_for(fullname)
        if spec is not None:
            # What an earlier import of it left stays its own until this one has run.
            self.keys.setdefault(fullname, None)
        return spec

    def _spec_for(self, fullname: str) -> importlib.machinery.ModuleSpec | None:
        if fullname == self.package_name:
            if self.index.init is not None:
                return self._file_spec(fullname, self.index.init, self.index.root)
            spec = importlib.machinery.ModuleSpec(
                fullname, _PackageLoader(self.index.root, self.keys), is_package=True
            )
            spec.submodule_search_locations = [str(self.index.root)]
            return spec
        entry = self._entries.get(fullname)
        if entry is None:
            if self.libraries is None:
                return None
            try:
                _, stem = Namespace.parse_module_name(fullname)
            except ValueError:
                return None
            if stem.partition(".")[0] in self.index.top_names:
                return None
            entry = self.libraries.entry(stem)
            if entry is None:
                return None
        return self._file_spec(
            fullname, entry.path, entry.path.parent if entry.is_package else None
        )

    def _file_spec(
        self, fullname: str, path: Path, package_dir: Path | None
    ) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_file_location(
            fullname,
            str(path),
            loader=_ModuleLoader(fullname, str(path), self.builtins, self.index.sources, self.keys),
            submodule_search_locations=[str(package_dir)] if package_dir else None,
        )

    def keep_own(self, key: str) -> None:
        """Put back the namespace's own module under ``key`` if it is gone or replaced.

        Only the namespace's import of ``key`` puts a module there; another
        namespace's code, or the host's, may have removed or rebound the key
        since (a load does not compare other namespaces' keys, see
        :mod:`plughost._modules_watch`). Its code gets its own module again.
        """
        modules = cast("dict[str, object]", sys.modules)
        if modules.get(key, MISSING) is self.keys.get(key, MISSING):
            return  # the usual case, at every import of a bundle name: no lock taken
        with _lock:  # an unload clears the keys and removes them under it
            own = self.keys.get(key)
            if (
                own is None
                or modules.get(key, MISSING) is own
                or _active.get(self.package_name) is not self
            ):
                return
            modules[key] = own
        warnings.warn(
            BundleWarning(
                f"{self.namespace!r}: sys.modules[{key!r}] had been removed or bound to "
                "another object; the namespace's own module was put back"
            ),
            stacklevel=4,
        )

    def resolve(self, name: str) -> tuple[str, str] | None:
        """Return (key to import, key to bind for a plain ``import``) for a bundle name."""
        head, _, rest = name.partition(".")
        if head in self._top_names:
            return self.namespace.module_name(name), self.namespace.module_name(head)
        if head == "agents":
            if not rest:
                return self.package_name, self.package_name
            if rest.partition(".")[0] in self._top_names:
                return self.namespace.module_name(rest), self.package_name
            if rest == "basic_agent":
                return _COMPAT_BASIC_AGENT, self.package_name
        if name == "basic_agent":
            return _COMPAT_BASIC_AGENT, _COMPAT_BASIC_AGENT
        return None


def _package_of(key: str) -> str:
    """The namespace package a ``plughost_ns.*`` key belongs to (``plughost_ns.t_acme``)."""
    return ".".join(key.split(".", 2)[:2])


def _bundle_import(
    name: str,
    globals: Mapping[str, object] | None = None,
    locals: Mapping[str, object] | None = None,
    fromlist: Sequence[str] = (),
    level: int = 0,
) -> ModuleType:
    """``__import__`` for bundle code: a bare name the bundle defines means its own module.

    The import statement passes the importing module's globals, whose
    ``__name__`` says which namespace is asking.
    """
    if globals is None:  # called by name, as __import__("helpers"): the caller's
        globals = sys._getframe(1).f_globals
    if level == 0:
        importer = globals.get("__name__")
        if isinstance(importer, str) and importer.startswith(_PREFIX):
            imports = _active.get(_package_of(importer))
            resolved = imports.resolve(name) if imports is not None else None
            if imports is not None and resolved is not None:
                key, bound = resolved
                imports.keep_own(key)
                if bound != key:
                    imports.keep_own(bound)
                module = _original_import(key, globals, locals, fromlist, 0)
                return module if fromlist else sys.modules[bound]
    return _original_import(name, globals, locals, fromlist, level)


def _import_module(name: str, package: str | None = None) -> ModuleType:
    """``importlib.import_module``, which resolves a bundle name for a namespace's code."""
    importer = sys._getframe(1).f_globals.get("__name__")
    if not name.startswith(".") and isinstance(importer, str) and importer.startswith(_PREFIX):
        imports = _active.get(_package_of(importer))
        resolved = imports.resolve(name) if imports is not None else None
        if imports is not None and resolved is not None:
            imports.keep_own(resolved[0])
            return _original_import_module(resolved[0])
    return _original_import_module(name, package)


_original_import_module = importlib.import_module
importlib.import_module = _import_module


class _BundleFinder(importlib.abc.MetaPathFinder):
    """Serves ``plughost_ns.*`` keys from the bundles of loaded namespaces."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_PREFIX):
            # Every import reaches this finder first: the host's keys are known as they appear.
            _host.note(fullname)
            return None
        imports = _active.get(_package_of(fullname))
        return imports.spec_for(fullname) if imports is not None else None


def _install_root() -> ModuleType:
    root = sys.modules.get(ROOT_PACKAGE)
    if root is None:
        root = ModuleType(ROOT_PACKAGE, "Synthetic parent of every plughost namespace package.")
        root.__path__ = []
        root.__spec__ = importlib.machinery.ModuleSpec(ROOT_PACKAGE, None, is_package=True)
        sys.modules[ROOT_PACKAGE] = root
    if not any(isinstance(finder, _BundleFinder) for finder in sys.meta_path):
        # First, so that no path-based finder serves a bundle file through a package __path__.
        sys.meta_path.insert(0, _BundleFinder())
    _host.rescan(list(sys.modules))
    return root


_root = _install_root()


class LoadedBundle:
    """A bundle loaded into a namespace.

    Attributes:
        namespace: where it is loaded.
        digest: the sha256 over the bundle's files.
        bundle_path: the folder its files are read from; data files are
            there too (also reachable as ``importlib.resources.files(__package__)``
            or ``Path(__file__).parent`` from bundle code).
        modules: each dotted stem mapped to its module object; emptied by unload.
    """

    def __init__(
        self,
        imports: _NamespaceImports,
        modules: dict[str, ModuleType],
        workdir: tempfile.TemporaryDirectory[str] | None,
    ) -> None:
        self.namespace = imports.namespace
        self.digest = imports.index.digest
        self.bundle_path = imports.index.root
        self.modules = modules
        self._imports = imports
        self._workdir = workdir

    @property
    def package_name(self) -> str:
        """The ``sys.modules`` key of the namespace package; every module key starts with it."""
        return self._imports.package_name

    @property
    def package(self) -> ModuleType | None:
        """The namespace package as its load made it (not what ``sys.modules`` holds now,
        which another namespace's code may have changed); ``None`` once unloaded."""
        kept = self._imports.keys.get(self.package_name)
        return kept if isinstance(kept, ModuleType) else None

    @property
    def is_loaded(self) -> bool:
        return _active.get(self.package_name) is self._imports

    def unload(self, *, verify: bool = True) -> UnloadReport:
        """Remove every module of the namespace from ``sys.modules`` and drop them.

        The cost is that of the namespace's own modules, however many other
        namespaces are loaded. With ``verify`` (the default), the report's
        :meth:`~UnloadReport.check_freed` runs before this returns; without,
        the caller may run it later, off its hot path. Unloading twice
        returns an empty report. Never raises for a leak.
        """
        with _lock:
            if _active.get(self.package_name) is not self._imports:
                return UnloadReport(self.namespace, [], verified=True)
            del _active[self.package_name]
            removed = _remove_modules(self._imports)
            _sweep_now_and_then()
        self.modules.clear()
        self._imports.loaded = None
        report = UnloadReport(
            self.namespace,
            [name for name, _ in removed],
            _watched=[(name, _watch(module)) for name, module in removed],
        )
        del removed
        if self._workdir is not None:
            self._workdir.cleanup()
        if verify:
            report.check_freed()
        return report

    def __repr__(self) -> str:
        state = "loaded" if self.is_loaded else "unloaded"
        return f"<LoadedBundle {self.namespace!r} {self.digest[:12]} {state}>"


def _watch(module: ModuleType) -> list[weakref.ref[Any]]:
    """Weak references that all die once the module, its globals and its classes are freed."""
    refs: list[weakref.ref[Any]] = [weakref.ref(module)]
    # The spec lives only in the module's globals, so it dies exactly when they do.
    if module.__spec__ is not None:
        refs.append(weakref.ref(module.__spec__))
    # A class can outlive its module's globals (an instance stashed elsewhere holds it).
    refs += [
        weakref.ref(value)
        for value in vars(module).values()
        if isinstance(value, type) and value.__module__ == module.__name__
    ]
    return refs


def _remove_modules(imports: _NamespaceImports) -> list[tuple[str, ModuleType]]:
    """Take the namespace's modules out of ``sys.modules``; call it holding ``_lock``.

    Only the keys the namespace is known to have are looked at (what its
    finder served, what its load added), not every key of ``sys.modules``:
    with thousands of namespaces loaded, a scan per unload would make
    unloading them all quadratic. Under the lock, a namespace's keys and its
    ``_active`` entry change together, which is what lets
    :func:`_undo_foreign_writes` tell an unload from another bundle's meddling.
    """
    # A copy: a thread of the namespace's code may still import (and record) meanwhile.
    keys = dict(imports.keys)
    for key in keys:
        sys.modules.pop(key, None)
    imports.keys.clear()
    # Its own modules, wherever they are: another object under one of its keys is not one.
    removed = [(key, kept) for key, kept in keys.items() if isinstance(kept, ModuleType)]
    _root.__dict__.pop(imports.package_name.partition(".")[2], None)
    return removed


def _sweep_now_and_then() -> None:
    """Remove, once in a while, keys of namespaces that are not loaded; call it holding ``_lock``.

    An unload removes the keys its namespace is known to have; a key its code
    put into ``sys.modules`` by hand during a call is not among them. One scan
    of ``sys.modules`` after as many unloads as there are namespaces loaded (32
    at least) finds those: its cost, spread over those unloads, is that of the
    namespaces' own keys, so unloading many stays linear.
    """
    global _unloads_since_sweep
    _unloads_since_sweep += 1
    if _unloads_since_sweep < max(_SWEEP_AFTER, len(_active)):
        return
    _unloads_since_sweep = 0
    everything = list(sys.modules)
    _host.rescan(everything)  # and learn the host's keys that were put there by hand
    markers = {imports.watch.marker for imports in _active.values() if imports.watch is not None}
    for key in [k for k in everything if type(k) is str and k.startswith(_PREFIX)]:
        if key.startswith(MARKER_PREFIX):
            if key not in markers:  # a load's marker outlives no load
                sys.modules.pop(key, None)
            continue
        package = _package_of(key)
        if package not in _active:
            sys.modules.pop(key, None)
            _root.__dict__.pop(package.partition(".")[2], None)


def _undo_foreign_writes(imports: _NamespaceImports, watch: LoadWatch) -> list[str]:
    """Put back what changed, while one bundle loaded, under keys it does not own.

    Foreign are: a host key removed or rebound (no import does that, and the
    host never removes such keys); a key added under a namespace that is not
    loaded; under one that was settled before the load began and still is
    (its own code does not import any more), a key added or rebound. Keys of
    namespaces that load meanwhile are theirs, and an unload removes a
    namespace's keys together with its ``_active`` entry under ``_lock``, so
    neither is judged.

    Each key put back is told to the other loads under way that were under
    way before the change, since a shared dict does not record who wrote it,
    and the one that did is among them; one that began after it takes the
    restored module for what it began with. Call it holding ``_lock``.
    Returns the keys that changed, sorted, those of ``watch.changed_meanwhile``
    included.
    """
    modules = cast("dict[str, object]", sys.modules)
    # What to put back under each foreign key (MISSING: nothing); the host's first, so that
    # nothing that follows can leave them changed.
    host = dict(host_changes(watch))
    _put_back_foreign(host)
    foreign: dict[str, object] = {}
    after = keys_added(watch)
    in_order = after is not None
    if after is None:
        foreign[watch.marker] = MISSING
        # What it added cannot be told from what was there: every namespace key is judged.
        after = [key for key in list(modules) if type(key) is str and key.startswith(_PREFIX)]
    own = imports.package_name
    for key in after:
        # Exactly str: a subclass's own methods would run here, under the lock.
        if type(key) is not str or key.startswith(MARKER_PREFIX):
            continue  # not a key the checks count, or a load's marker
        if not key.startswith(_PREFIX):
            _host.note(key)  # imported, or put there by hand; a change of its object is above
            continue
        package = _package_of(key)
        value = modules.get(key, MISSING)
        if package == own:
            if value is not MISSING:  # what it added by hand is its own to remove at unload
                imports.keys.setdefault(key, value)
            continue
        other = _active.get(package)
        if other is None:
            foreign[key] = MISSING
        elif other.settled_at is not None and other.settled_at < watch.began:
            recorded = other.keys.get(key, MISSING)
            if recorded is not value and recorded is not None:
                foreign[key] = recorded
    _put_back_foreign(foreign)
    foreign.update(host)
    if not foreign:
        return sorted(watch.changed_meanwhile)
    _tell_other_loads(imports, watch, foreign, after if in_order else None)
    return sorted(watch.changed_meanwhile.union(foreign))


def _put_back_foreign(foreign: Mapping[str, object]) -> None:
    modules = cast("dict[str, object]", sys.modules)
    for key, was in foreign.items():
        if was is MISSING:
            modules.pop(key, None)
        else:
            modules[key] = was


def _tell_other_loads(
    imports: _NamespaceImports,
    watch: LoadWatch,
    foreign: Mapping[str, object],
    after: list[object] | None,
) -> None:
    """Tell the other loads under way of the keys ``watch``'s load put back.

    A load was under way before a host key changed when it began with the
    object this load began with; before a key appeared in the tail when its
    marker comes before that key (``after`` is last first). Without the tail
    in order (the marker was moved), only the host keys are told.
    """
    position = {key: index for index, key in enumerate(after or ())}
    for other in _active.values():
        theirs = other.watch
        if other is imports or theirs is None:
            continue
        for key, was in foreign.items():
            if key.startswith(_PREFIX):
                if key in position and position.get(theirs.marker, len(position)) > position[key]:
                    theirs.changed_meanwhile.add(key)
            elif theirs.host_value(key) is watch.host_value(key):
                theirs.changed_meanwhile.add(key)
            else:
                theirs.correct_host(key, was)


def loaded_namespaces() -> list[Namespace]:
    """Return the namespaces loaded (or loading) right now, sorted."""
    with _lock:
        return sorted(imports.namespace for imports in _active.values())


def load_bundle(
    namespace: Namespace, source: str | os.PathLike[str], libraries: Libraries | None = None
) -> LoadedBundle:
    """Load the bundle at ``source`` (a folder, ``.zip`` or ``.tar.gz``) into ``namespace``.

    ``source`` may also be a single ``.py`` file, loaded as a bundle of one module.
    ``libraries`` are the tenant's own, imported under the namespace's keys too.

    Every module of the bundle is imported, in stem order, under the
    namespace's keys. Threads that load the same namespace at once share one
    load; loading a namespace that is already loaded with the same content
    returns the existing :class:`LoadedBundle`.

    Raises:
        BundleRejectedError: ``source`` is not a bundle, or an archive entry is unsafe.
        BundleLoadError: a module failed (syntax error, exception, missing
            import, ``sys.exit``); ``sys.modules`` holds nothing of the namespace.
        NamespaceConflictError: the namespace is loaded with other content.
    """
    path = Path(source)
    workdir: tempfile.TemporaryDirectory[str] | None = None
    if path.is_dir() or (path.is_file() and path.suffix == ".py"):
        root = path.resolve()
    elif is_archive(path):
        workdir = tempfile.TemporaryDirectory(prefix="plughost-bundle-")
        root = Path(workdir.name).resolve()
    else:
        raise BundleRejectedError("a bundle must be a folder, a .zip or a .tar.gz", str(path))
    try:
        if workdir is not None:
            extract_archive(path, root)
        index = index_bundle(root)
    except BaseException:
        if workdir is not None:
            workdir.cleanup()
        raise
    return _load_index(namespace, index, workdir, libraries)


def _load_index(
    namespace: Namespace,
    index: BundleIndex,
    workdir: tempfile.TemporaryDirectory[str] | None,
    libraries: Libraries | None = None,
) -> LoadedBundle:
    package_name = namespace.package_name
    with _lock:
        imports = _active.get(package_name)
        owner = imports is None
        if imports is None:
            imports = _active[package_name] = _NamespaceImports(namespace, index, libraries)
    if not owner:
        if workdir is not None:
            workdir.cleanup()
        return _wait_for(imports, index)
    watch: LoadWatch | None = None
    try:
        with _lock:
            own_keys = [package_name, *(namespace.module_name(stem) for stem in index.modules)]
            planted = [key for key in own_keys if sys.modules.pop(key, None) is not None]
            watch = imports.watch = start_watch(_host, next(_events))
        if planted:
            warnings.warn(
                BundleWarning(
                    f"{namespace!r}: dropped sys.modules keys set before it loaded: "
                    + ", ".join(planted)
                ),
                stacklevel=3,
            )
        failure: BaseException | None = None
        try:
            modules = _import_modules(namespace, index)
        except BaseException as exc:
            # A module that fails after it tampered is checked all the same.
            failure = exc
        with _lock:
            foreign = _undo_foreign_writes(imports, watch)
            imports.watch = None
            end_watch(watch)
        if foreign:
            raise ForeignModulesError(namespace, foreign) from failure
        if failure is not None:
            raise failure
    except BaseException as exc:
        with _lock:
            imports.watch = None
            if watch is not None:
                end_watch(watch)
            _remove_modules(imports)
            del _active[package_name]
        if workdir is not None:
            workdir.cleanup()
        if isinstance(exc, BundleLoadError):
            imports.error = exc
            imports.done.set()
            raise
        if isinstance(exc, Exception | SystemExit):
            error = load_error(namespace, index.root, exc)
            imports.error = error
            imports.done.set()
            raise error from exc
        imports.error = exc
        imports.done.set()
        raise
    # A module imported later, in a call, reads its file then; a namespace keeps no copy.
    index.sources.clear()
    loaded = LoadedBundle(imports, modules, workdir)
    with _lock:
        imports.settled_at = next(_events)
        imports.loaded = loaded
    imports.done.set()
    return loaded


def _import_modules(namespace: Namespace, index: BundleIndex) -> dict[str, ModuleType]:
    importlib.import_module(namespace.package_name)
    return {
        stem: importlib.import_module(namespace.module_name(stem))
        for stem in index.modules
        if stem.rpartition(".")[2] != "__main__"
    }


def _wait_for(imports: _NamespaceImports, index: BundleIndex) -> LoadedBundle:
    imports.done.wait()
    if imports.error is not None:
        raise imports.error
    loaded = imports.loaded
    if loaded is None:
        raise BundleLoadError(imports.namespace, RuntimeError("unloaded while loading"))
    if loaded.digest != index.digest:
        raise NamespaceConflictError(imports.namespace, loaded.digest, index.digest)
    return loaded


def load_error(namespace: Namespace, root: Path, exc: BaseException) -> BundleLoadError:
    """Name the bundle file and line where ``exc`` arose: the deepest frame inside ``root``.

    The file is named by its path in the bundle, as its author knows it, not by
    where the server keeps it.
    """
    if isinstance(exc, SyntaxError) and exc.filename:
        where = Path(exc.filename)
        if where.is_relative_to(root):
            where = where.relative_to(root)
            exc.filename = str(where)  # what str(exc) says
        return BundleLoadError(namespace, exc, where, exc.lineno)
    file: Path | None = None
    line: int | None = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        candidate = Path(frame.f_code.co_filename)
        if candidate.is_relative_to(root):
            file, line = candidate.relative_to(root), lineno
    return BundleLoadError(namespace, exc, file, line)
