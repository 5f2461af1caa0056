"""Load a bundle into a namespace, and unload it again.

How isolation works, without touching ``sys.path``:

* A meta path finder serves every key below ``plughost_ns.<namespace>`` from
  that namespace's bundle folder, and only while the namespace is loaded.
* Bundle modules get ``__builtins__`` whose ``__import__`` first resolves a
  bare name against the importing module's own bundle (known from the
  ``__name__`` in the globals every import statement passes): ``import
  helpers`` inside tenant acme's code imports ``plughost_ns.t_acme.helpers``.
  Lazy imports inside functions go through the same ``__builtins__``. Names
  the bundle does not define (stdlib, installed packages) import as usual and
  are shared. ``from . import helpers`` works because every top-level module
  is a submodule of the namespace package.
* ``agents`` is an alias of the bundle itself, and ``basic_agent`` /
  ``agents.basic_agent`` resolve to :mod:`plughost.agent` unless the bundle
  ships its own, so agent files written for other hosts load unchanged.

``importlib.import_module("helpers")`` and ``exec`` bypass ``__import__`` and
are not redirected; bundle code should use import statements.

While a bundle loads, what it does to other namespaces' ``sys.modules`` keys
is undone and fails the load (:class:`~plughost.errors.ForeignModulesError`),
and keys planted under a namespace's module names before it loads are
dropped. Code that runs later, in a call, is not watched: in-process
namespaces separate names, they do not sandbox hostile code;
``placement = "process"`` does.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
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
from typing import Any

from ._codecache import CodeCache
from ._leaks import find_leaks
from .bundle import BundleIndex, extract_archive, index_bundle, is_archive
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


@dataclass
class Leak:
    """A bundle module that outlived its unload, and what still holds it."""

    module_name: str
    holders: list[str]


@dataclass
class UnloadReport:
    """What an unload removed and whether all of it was garbage-collected.

    ``leaked`` is empty when every module object and module namespace was
    freed. ``verified`` is False when the check was skipped.
    """

    namespace: Namespace
    modules: list[str]
    leaked: list[Leak] = field(default_factory=list)
    verified: bool = True


class _FolderResources(TraversableResources):
    """``importlib.resources`` access to a bundle folder, for the namespace package."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def files(self) -> Traversable:
        return self._root


class _PackageLoader(importlib.abc.Loader):
    """Creates the namespace package of a bundle that has no ``__init__.py`` of its own."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        pass

    def is_package(self, fullname: str) -> bool:
        return True

    def get_resource_reader(self, fullname: str) -> TraversableResources:
        return _FolderResources(self._root)


class _ModuleLoader(importlib.machinery.SourceFileLoader):
    """Executes one bundle file with the bundle ``__builtins__`` and the shared code cache."""

    def get_code(self, fullname: str) -> CodeType:
        return code_cache.code_for(self.get_data(self.path), self.path)

    def exec_module(self, module: ModuleType) -> None:
        code = self.get_code(module.__name__)
        module.__dict__["__builtins__"] = _bundle_builtins
        path_before = sys.path[:]
        import_before = builtins.__import__
        try:
            exec(code, module.__dict__)
        finally:
            # Both are shared by every namespace and the host itself.
            if sys.path != path_before:
                sys.path[:] = path_before
                self._undone("sys.path")
            if builtins.__import__ is not import_before:
                builtins.__import__ = import_before
                self._undone("builtins.__import__")

    def _undone(self, what: str) -> None:
        warnings.warn(
            BundleWarning(f"{self.path} changed {what} while loading; the change was undone"),
            stacklevel=3,
        )


class _NamespaceImports:
    """What the import machinery needs about one namespace: its files and its sibling names."""

    def __init__(self, namespace: Namespace, index: BundleIndex) -> None:
        self.namespace = namespace
        self.index = index
        self.package_name = namespace.package_name
        self._top_names = index.top_names
        self.done = threading.Event()
        self.loaded: LoadedBundle | None = None
        self.error: BaseException | None = None

    def spec_for(self, fullname: str) -> importlib.machinery.ModuleSpec | None:
        if fullname == self.package_name:
            if self.index.init is not None:
                return self._file_spec(fullname, self.index.init, self.index.root)
            spec = importlib.machinery.ModuleSpec(
                fullname, _PackageLoader(self.index.root), is_package=True
            )
            spec.submodule_search_locations = [str(self.index.root)]
            return spec
        try:
            _, stem = Namespace.parse_module_name(fullname)
        except ValueError:
            return None
        entry = self.index.modules.get(stem)
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
            loader=_ModuleLoader(fullname, str(path)),
            submodule_search_locations=[str(package_dir)] if package_dir else None,
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
    if level == 0 and globals is not None:
        importer = globals.get("__name__")
        if isinstance(importer, str) and importer.startswith(_PREFIX):
            imports = _active.get(_package_of(importer))
            resolved = imports.resolve(name) if imports is not None else None
            if resolved is not None:
                key, bound = resolved
                module = _original_import(key, globals, locals, fromlist, 0)
                return module if fromlist else sys.modules[bound]
    return _original_import(name, globals, locals, fromlist, level)


_bundle_builtins: dict[str, Any] = {**builtins.__dict__, "__import__": _bundle_import}
"""The ``__builtins__`` of every bundle module: the real ones but for ``__import__``."""


class _BundleFinder(importlib.abc.MetaPathFinder):
    """Serves ``plughost_ns.*`` keys from the bundles of loaded namespaces."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_PREFIX):
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
    def is_loaded(self) -> bool:
        return _active.get(self.package_name) is self._imports

    def unload(self, *, verify: bool = True) -> UnloadReport:
        """Remove every module of the namespace from ``sys.modules`` and drop them.

        With ``verify`` (the default), confirm through weak references, after
        a garbage collection if needed, that every module and its globals were
        freed; what survived is listed in ``report.leaked`` with what holds it.
        Unloading twice returns an empty report. Never raises for a leak.
        """
        with _lock:
            if _active.get(self.package_name) is not self._imports:
                return UnloadReport(self.namespace, [])
            del _active[self.package_name]
            removed = _remove_modules(self.package_name)
        self.modules.clear()
        self._imports.loaded = None
        watched = [(name, _watch(module)) for name, module in removed]
        names = [name for name, _ in removed]
        del removed
        if self._workdir is not None:
            self._workdir.cleanup()
        if not verify:
            return UnloadReport(self.namespace, names, verified=False)
        leaks = [Leak(name, holders) for name, holders in find_leaks(watched, self.package_name)]
        return UnloadReport(self.namespace, names, leaks)

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


def _remove_modules(package_name: str) -> list[tuple[str, ModuleType]]:
    """Take the namespace's modules out of ``sys.modules``; call it holding ``_lock``.

    Under the lock, a namespace's keys and its ``_active`` entry change
    together, which is what lets :func:`_undo_foreign_writes` tell an unload
    from another bundle's meddling.
    """
    prefix = package_name + "."
    keys = [k for k in list(sys.modules) if k == package_name or k.startswith(prefix)]
    removed = [(k, m) for k in keys if (m := sys.modules.pop(k, None)) is not None]
    _root.__dict__.pop(package_name.partition(".")[2], None)
    return removed


def _undo_foreign_writes(
    own_package: str,
    own_keys: list[str],
    before: dict[str, ModuleType],
    settled: dict[str, _NamespaceImports],
) -> list[str]:
    """Put back what changed, while one bundle loaded, under keys it does not own.

    ``before`` is a copy of ``sys.modules`` from when the load began (this
    call changes it), ``own_keys`` the keys of the modules the load imports, and
    ``settled`` the namespaces that had finished loading then. A change is the
    loading bundle's doing when it touches the root package, a namespace that
    was settled before and still is (its own code does not import any more),
    or adds a key under a namespace that is not loaded at all. Namespaces that
    load meanwhile change their own keys, so theirs are not judged. Call it
    holding ``_lock``. Returns the keys put back, sorted.
    """
    for key in own_keys:
        if key in sys.modules:
            before[key] = sys.modules[key]
    # The usual case, compared in C. It still touches every entry: about 1 ms per load
    # at 20,000 modules (bench/RESULTS.md, loader run C).
    if before == sys.modules:
        return []
    after = sys.modules.copy()
    touched = {
        key
        for key, _ in before.items() ^ after.items()
        if key.startswith(_PREFIX) or key == ROOT_PACKAGE
    }
    changed = []
    for key in touched:
        package = _package_of(key)
        if package == own_package:
            continue
        was, now = before.get(key), after.get(key)
        imports = _active.get(package)
        if (
            key == ROOT_PACKAGE
            or (imports is not None and settled.get(package) is imports)
            or (imports is None and now is not None)
        ):
            changed.append(key)
            if was is None:
                del sys.modules[key]
            else:
                sys.modules[key] = was
    return sorted(changed)


def loaded_namespaces() -> list[Namespace]:
    """Return the namespaces loaded (or loading) right now, sorted."""
    with _lock:
        return sorted(imports.namespace for imports in _active.values())


def load_bundle(namespace: Namespace, source: str | os.PathLike[str]) -> LoadedBundle:
    """Load the bundle at ``source`` (a folder, ``.zip`` or ``.tar.gz``) into ``namespace``.

    ``source`` may also be a single ``.py`` file, loaded as a bundle of one module.

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
    return _load_index(namespace, index, workdir)


def _load_index(
    namespace: Namespace, index: BundleIndex, workdir: tempfile.TemporaryDirectory[str] | None
) -> LoadedBundle:
    package_name = namespace.package_name
    with _lock:
        imports = _active.get(package_name)
        owner = imports is None
        if imports is None:
            imports = _active[package_name] = _NamespaceImports(namespace, index)
    if not owner:
        if workdir is not None:
            workdir.cleanup()
        return _wait_for(imports, index)
    try:
        with _lock:
            own_keys = [package_name, *(namespace.module_name(stem) for stem in index.modules)]
            planted = [key for key in own_keys if sys.modules.pop(key, None) is not None]
            before = sys.modules.copy()
            settled = {p: i for p, i in _active.items() if i.loaded is not None}
        if planted:
            warnings.warn(
                BundleWarning(
                    f"{namespace!r}: dropped sys.modules keys set before it loaded: "
                    + ", ".join(planted)
                ),
                stacklevel=3,
            )
        importlib.import_module(package_name)
        modules: dict[str, ModuleType] = {}
        for stem in index.modules:
            if stem.rpartition(".")[2] != "__main__":
                modules[stem] = importlib.import_module(namespace.module_name(stem))
        with _lock:
            foreign = _undo_foreign_writes(package_name, own_keys, before, settled)
        if foreign:
            raise ForeignModulesError(namespace, foreign)
    except BaseException as exc:
        with _lock:
            _remove_modules(package_name)
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
    loaded = LoadedBundle(imports, modules, workdir)
    imports.loaded = loaded
    imports.done.set()
    return loaded


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
    """Name the bundle file and line where ``exc`` arose: the deepest frame inside ``root``."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return BundleLoadError(namespace, exc, Path(exc.filename), exc.lineno)
    file: Path | None = None
    line: int | None = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        candidate = Path(frame.f_code.co_filename)
        if candidate.is_relative_to(root):
            file, line = candidate, lineno
    return BundleLoadError(namespace, exc, file, line)
