"""Bundles as files: safe archive extraction, the module index and the content digest.

A bundle is a folder (or a ``.zip`` / ``.tar.gz`` of one) holding ``.py`` files,
subpackages (folders with ``__init__.py``) and data files. This module knows
which files are modules, how to unpack an archive without letting any entry
escape its target, and how a folder differs from the manifest it was built
from; it imports nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from .errors import BundleRejectedError, BundleTooLargeError
from .naming import RESERVED_STEM_PREFIX

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP_MAGIC = b"\x1f\x8b"
_COPY_CHUNK = 1 << 16
_MAX_NAME_BYTES = 255  # what file systems allow for one name
_RATIO_FLOOR = 1 << 20  # below this, any expansion is harmless: tiny files compress absurdly well

_Opener = Callable[[], IO[bytes] | None]


@dataclass(frozen=True)
class BundleLimits:
    """Bounds on what one bundle may hold; a bundle past any of them is refused.

    ``max_ratio`` bounds how many times an archive may expand its own size
    once its content passes 1 MiB: source code compresses 3 to 10 times, a
    compression bomb hundreds or thousands of times.
    """

    max_total_bytes: int = 64 * 1024 * 1024
    max_files: int = 5_000
    max_file_bytes: int = 16 * 1024 * 1024
    max_ratio: int = 100
    max_metadata_bytes: int = 64 * 1024


@dataclass(frozen=True)
class ModuleEntry:
    """One module of a bundle: its dotted stem, its source file, whether it is a package."""

    stem: str
    path: Path
    is_package: bool


@dataclass(frozen=True)
class BundleIndex:
    """The modules of a bundle folder and the digest of all its files.

    ``modules`` maps each dotted stem (``"helpers"``, ``"pkg.sub"``) to its
    entry; ``init`` is the bundle's own top-level ``__init__.py``, if any, which
    becomes the body of the namespace package.
    """

    root: Path
    modules: dict[str, ModuleEntry]
    init: Path | None
    digest: str
    sources: dict[str, tuple[bytes, bytes]] = field(default_factory=dict, repr=False)
    """Each ``.py`` file as read for the digest, by path: its content and sha256, so
    that a load reads and hashes each file once. A load empties it when done."""

    @property
    def top_names(self) -> frozenset[str]:
        """The names a bundle module can import its siblings by."""
        return frozenset(stem.partition(".")[0] for stem in self.modules)


def index_bundle(root: Path) -> BundleIndex:
    """Return the module index and digest of the bundle folder ``root``.

    Top-level ``.py`` files and folders with an ``__init__.py`` (recursively)
    are modules; everything else is data. ``__pycache__`` folders are ignored.
    ``root`` may also be one ``.py`` file: a bundle of that module alone.

    Raises:
        BundleRejectedError: ``root`` is not a folder, or a module's file name
            cannot be a module name (it holds a ``.`` or uses the reserved
            ``_x__`` prefix).
    """
    if root.is_file() and root.suffix == ".py":
        stem = _checked_part(root.name[:-3], root)
        digest, sources = _read([(root.name, str(root))])
        return BundleIndex(
            root=root.parent,
            modules={stem: ModuleEntry(stem, root, False)},
            init=None,
            digest=digest,
            sources=sources,
        )
    if not root.is_dir():
        raise BundleRejectedError("a bundle must be a folder, a .zip or a .tar.gz", str(root))
    modules: dict[str, ModuleEntry] = {}
    _index_package(root, (), modules)
    init = root / "__init__.py"
    digest, sources = _read(_bundle_files(str(root)))
    return BundleIndex(
        root=root,
        modules=dict(sorted(modules.items())),
        init=init if init.is_file() else None,
        digest=digest,
        sources=sources,
    )


def _read(files: Iterable[tuple[str, str]]) -> tuple[str, dict[str, tuple[bytes, bytes]]]:
    """The digest of ``(relative path, path)`` files, and the ``.py`` ones' content and sha256."""
    manifest: dict[str, str] = {}
    sources: dict[str, tuple[bytes, bytes]] = {}
    for relative, path in files:
        with open(path, "rb") as stream:
            data = stream.read()
        sha = hashlib.sha256(data).digest()
        manifest[relative] = sha.hex()
        if relative.endswith(".py"):
            sources[path] = (data, sha)
    return manifest_digest(manifest), sources


def _index_package(folder: Path, prefix: tuple[str, ...], into: dict[str, ModuleEntry]) -> None:
    with os.scandir(folder) as listing:
        children = sorted(listing, key=lambda entry: entry.name)
    for child in children:
        if child.is_dir():
            if child.name != "__pycache__" and os.path.isfile(child.path + "/__init__.py"):
                parts = (*prefix, _checked_part(child.name, Path(child.path)))
                package = Path(child.path)
                into[".".join(parts)] = ModuleEntry(".".join(parts), package / "__init__.py", True)
                _index_package(package, parts, into)
        elif child.name.endswith(".py") and child.name != "__init__.py" and child.is_file():
            parts = (*prefix, _checked_part(child.name[:-3], Path(child.path)))
            into[".".join(parts)] = ModuleEntry(".".join(parts), Path(child.path), False)


def _checked_part(name: str, path: Path) -> str:
    if "." in name:
        raise BundleRejectedError("a module file name may not contain '.' besides '.py'", str(path))
    if name.startswith(RESERVED_STEM_PREFIX):
        raise BundleRejectedError(
            f"module names starting with {RESERVED_STEM_PREFIX!r} are reserved", str(path)
        )
    return name


def iter_bundle_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Yield ``(relative posix path, path)`` for every file of a bundle folder, by path."""
    for relative, path in _bundle_files(str(root)):
        yield relative, Path(path)


def _bundle_files(root: str) -> list[tuple[str, str]]:
    """Every file of a bundle folder as ``(relative posix path, path)``, sorted by the former.

    A link to a file counts as that file; a link to a folder is not followed,
    and nothing inside a ``__pycache__`` folder counts.
    """
    found: list[tuple[str, str]] = []
    pending = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        with os.scandir(folder) as listing:
            for entry in listing:
                if entry.name == "__pycache__":
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append((f"{prefix}{entry.name}/", entry.path))
                elif entry.is_file():
                    found.append((prefix + entry.name, entry.path))
    found.sort()
    return found


def manifest_digest(manifest: Mapping[str, str]) -> str:
    """Return the bundle digest of ``{relative path: sha256 hex of content}``.

    It covers every path and every content, so two bundles share a digest
    exactly when they hold the same files.
    """
    digest = hashlib.sha256()
    for relative in sorted(manifest):
        digest.update(relative.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(bytes.fromhex(manifest[relative]))
    return digest.hexdigest()


def folder_differences(root: Path, manifest: Mapping[str, str]) -> list[str]:
    """How the folder ``root`` differs from ``manifest`` (relative path -> sha256 hex).

    One line per file, sorted by path: a file whose content differs (or that
    is no longer a regular file: a link, say), a file that is missing, and an
    entry the manifest does not hold. Empty folders are not counted.
    """
    present = set(_entries(root, ""))
    differences: list[str] = []
    for relative in sorted(present | manifest.keys()):
        if relative not in manifest:
            differences.append(f"{relative} is not part of the bundle")
        elif relative not in present:
            differences.append(f"{relative} is missing")
        elif _regular_file_sha256(root / relative) != manifest[relative]:
            differences.append(f"{relative} differs from the stored content")
    return differences


def _entries(folder: Path, prefix: str) -> Iterator[str]:
    """The relative paths of everything under ``folder`` that is not a folder."""
    try:
        listing = os.scandir(folder)
    except FileNotFoundError:
        # Moved away while it was read (a rebuild): what it held counts as missing.
        return
    with listing as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from _entries(Path(entry.path), f"{prefix}{entry.name}/")
            else:
                yield prefix + entry.name


def _regular_file_sha256(path: Path) -> str | None:
    """The sha256 hex of a regular file, or ``None`` for anything else.

    Neither a link nor a FIFO is followed or waited on.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        return hashlib.file_digest(stream, "sha256").hexdigest()


def folder_digest(root: Path) -> str:
    """Return the :func:`manifest_digest` of the files of a bundle folder."""
    return manifest_digest(
        {
            rel: hashlib.sha256(path.read_bytes()).hexdigest()
            for rel, path in iter_bundle_files(root)
        }
    )


@dataclass(frozen=True)
class BundleFiles:
    """A bundle read into memory: its files by relative path, and the metadata it came with."""

    files: dict[str, bytes]
    metadata: dict[str, Any]

    @functools.cached_property
    def manifest(self) -> dict[str, str]:
        """``{relative path: sha256 hex}`` of every file."""
        return {rel: hashlib.sha256(data).hexdigest() for rel, data in self.files.items()}

    @functools.cached_property
    def digest(self) -> str:
        return manifest_digest(self.manifest)


BundleSource = str | os.PathLike[str] | bytes | Mapping[str, Any]
"""A folder or archive path, the raw bytes of a ``.zip`` or ``.tar.gz``, or a JSON bundle."""


def read_bundle(
    source: BundleSource, limits: BundleLimits | None = None, scratch: Path | None = None
) -> BundleFiles:
    """Read and check a bundle from any :data:`BundleSource`.

    A JSON bundle is ``{"agents": [{"filename": ..., "source": ...}], ...}``
    (``"files"`` in the same shape is accepted too); its other keys are kept
    as metadata. Folders may not hold links that lead outside them. Raw bytes
    and archives are unpacked into a temporary folder (``plughost-upload-*``,
    ``plughost-extract-*``) in ``scratch``, or in the system's temporary folder.

    Raises:
        BundleRejectedError: the source is none of these, an entry is unsafe,
            a limit is passed, or the bundle holds no file.
    """
    limits = limits or BundleLimits()
    if isinstance(source, Mapping):
        bundle = _read_json_bundle(source, limits)
    elif isinstance(source, bytes):
        with tempfile.TemporaryDirectory(prefix="plughost-upload-", dir=scratch) as tmp:
            archive = Path(tmp, "upload")
            archive.write_bytes(source)
            bundle = _read_archive(archive, limits, scratch)
    else:
        path = Path(source)
        if path.is_dir():
            bundle = BundleFiles(_read_folder(path, limits), {})
        elif path.is_file():
            bundle = _read_archive(path, limits, scratch)
        else:
            raise BundleRejectedError("no such folder or file", str(path))
    if not bundle.files:
        raise BundleRejectedError("the bundle holds no file")
    return bundle


def _read_archive(archive: Path, limits: BundleLimits, scratch: Path | None) -> BundleFiles:
    with tempfile.TemporaryDirectory(prefix="plughost-extract-", dir=scratch) as tmp:
        extract_archive(archive, Path(tmp), limits)
        return BundleFiles(_read_folder(Path(tmp), limits), {})


def _read_folder(root: Path, limits: BundleLimits) -> dict[str, bytes]:
    plan = _Plan(limits)
    resolved_root = root.resolve()
    files: dict[str, bytes] = {}
    for relative, path in iter_bundle_files(root):
        if not path.resolve().is_relative_to(resolved_root):
            raise BundleRejectedError("link leads outside the bundle", relative)
        plan.add_file(relative, path.stat().st_size)
        files[relative] = path.read_bytes()
    return files


def _read_json_bundle(document: Mapping[str, Any], limits: BundleLimits) -> BundleFiles:
    entries: list[Any] = []
    for key in ("agents", "files"):
        listed = document.get(key, [])
        if not isinstance(listed, list):
            raise BundleRejectedError(f"'{key}' must be a list of {{filename, source}} objects")
        entries += listed
    if not entries:
        raise BundleRejectedError("a JSON bundle needs a non-empty 'agents' or 'files' list")
    plan = _Plan(limits)
    files: dict[str, bytes] = {}
    for position, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise BundleRejectedError(f"entry {position} is not an object")
        filename, source = entry.get("filename"), entry.get("source")
        if not isinstance(filename, str) or not isinstance(source, str):
            raise BundleRejectedError(
                f"entry {position} needs a string 'filename' and a string 'source'"
            )
        data = source.encode("utf-8", "surrogatepass")
        files[str(plan.add_file(filename, len(data)))] = data
    metadata = {k: v for k, v in document.items() if k not in ("agents", "files")}
    _check_metadata(metadata, limits.max_metadata_bytes)
    return BundleFiles(files, metadata)


def _check_metadata(metadata: dict[str, Any], limit: int) -> None:
    # Encoded piece by piece, to stop at the limit: metadata is stored and sent back with
    # every answer about the deployment, so it stays small.
    size = 0
    try:
        for piece in json.JSONEncoder().iterencode(metadata):
            size += len(piece)
            if size > limit:
                raise BundleRejectedError(f"bundle metadata is over the limit of {limit} bytes")
    except (TypeError, ValueError) as exc:
        raise BundleRejectedError(f"bundle metadata is not JSON: {exc}") from None


def is_archive(path: Path) -> bool:
    """Return True when ``path`` is a file that starts like a zip or a gzip stream."""
    if not path.is_file():
        return False
    with path.open("rb") as stream:
        head = stream.read(4)
    return head.startswith(_GZIP_MAGIC) or head in _ZIP_MAGIC


def extract_archive(archive: Path, target: Path, limits: BundleLimits | None = None) -> None:
    """Unpack the ``.zip`` or ``.tar.gz`` file ``archive`` into the empty folder ``target``.

    Every entry is checked before anything is written: absolute names, ``..``,
    backslashes, names that are not UTF-8, links, devices, duplicates, and the
    count and size limits. Sizes are counted again while writing, so a header
    that lies about them cannot get past the limits. On error ``target`` may
    hold part of the content; the caller owns it and discards it.

    Raises:
        BundleRejectedError: the file is not such an archive, or an entry or
            the whole is refused; the message names the entry.
    """
    limits = limits or BundleLimits()
    with archive.open("rb") as stream:
        head = stream.read(4)
    if head in _ZIP_MAGIC:
        _extract_zip(archive, target, limits)
    elif head.startswith(_GZIP_MAGIC):
        _extract_tar(archive, target, limits)
    else:
        raise BundleRejectedError("not a .zip or .tar.gz archive", archive.name)


def _checked_folder_entry(name: str) -> None:
    """Check a folder entry; unlike a file entry, it may name the root (``./``)."""
    if name.strip("/") not in ("", "."):
        _checked_entry_name(name)


def _checked_entry_name(name: str) -> PurePosixPath:
    if "\x00" in name or "\\" in name:
        raise BundleRejectedError("entry name holds a NUL or a backslash", name)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleRejectedError("entry name is not valid UTF-8", name) from None
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise BundleRejectedError("entry has an absolute path", name)
    parts = [part for part in PurePosixPath(name).parts if part not in ("", ".")]
    if ".." in parts:
        raise BundleRejectedError("entry path contains '..'", name)
    if not parts:
        raise BundleRejectedError("entry has an empty name", name)
    if any(len(part.encode("utf-8")) > _MAX_NAME_BYTES for part in parts):
        raise BundleRejectedError(f"a name in the path is over {_MAX_NAME_BYTES} bytes", name)
    return PurePosixPath(*parts)


class _Plan:
    """The checked entries of an archive, before any of them is written.

    ``packed_bytes`` is the archive's own size, for the expansion ratio; a
    folder or a JSON bundle has none.
    """

    def __init__(self, limits: BundleLimits, packed_bytes: int | None = None) -> None:
        self.limits = limits
        self.packed_bytes = packed_bytes
        self.files: dict[PurePosixPath, int] = {}
        self.folders: set[PurePosixPath] = set()
        self.total = 0

    def add_file(self, name: str, size: int) -> PurePosixPath:
        path = _checked_entry_name(name)
        if path in self.files:
            raise BundleRejectedError("entry appears twice", name)
        if path in self.folders or any(parent in self.files for parent in path.parents):
            raise BundleRejectedError("a file and a folder of the bundle share this name", name)
        self.folders.update(path.parents)
        if size > self.limits.max_file_bytes:
            raise BundleTooLargeError(
                f"entry is {size} bytes, over the limit of {self.limits.max_file_bytes}", name
            )
        self.files[path] = size
        self.total += size
        if len(self.files) > self.limits.max_files:
            raise BundleTooLargeError(f"bundle has more than {self.limits.max_files} files")
        if self.total > self.limits.max_total_bytes:
            raise BundleTooLargeError(
                f"bundle is over the limit of {self.limits.max_total_bytes} bytes"
            )
        self.check_ratio(self.total)
        return path

    def check_ratio(self, expanded: int) -> None:
        """Refuse an archive whose content, ``expanded`` bytes so far, passes ``max_ratio``."""
        if self.packed_bytes is None or expanded <= _RATIO_FLOOR:
            return
        if expanded > self.limits.max_ratio * self.packed_bytes:
            raise BundleTooLargeError(
                f"archive of {self.packed_bytes} bytes expands to over {expanded} bytes, "
                f"more than {self.limits.max_ratio} times its size (a compression bomb)"
            )


def _copy_bounded(source: IO[bytes], destination: Path, name: str, plan: _Plan) -> int:
    """Copy one entry, counting real bytes against the limits; return bytes written."""
    written = 0
    destination.parent.mkdir(parents=True, exist_ok=True)
    with destination.open("xb") as out:
        while chunk := source.read(_COPY_CHUNK):
            written += len(chunk)
            if written > plan.limits.max_file_bytes:
                raise BundleTooLargeError("entry expands past the single-file limit", name)
            out.write(chunk)
    return written


def _extract_zip(archive: Path, target: Path, limits: BundleLimits) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            _extract_zip_entries(zf, target, _Plan(limits, archive.stat().st_size))
    except BundleRejectedError:
        raise
    except (
        Exception
    ) as exc:  # corrupt data fails in many ways: zlib, bz2, lzma, unsupported methods
        raise BundleRejectedError(
            f"not a readable zip archive: {type(exc).__name__}: {exc}", archive.name
        ) from None


def _extract_zip_entries(zf: zipfile.ZipFile, target: Path, plan: _Plan) -> None:
    entries: list[tuple[PurePosixPath, _Opener]] = []
    for info in zf.infolist():
        name = _zip_entry_name(info)
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if info.flag_bits & 0x1:
            raise BundleRejectedError("entry is encrypted", name)
        if kind == stat.S_IFLNK:
            raise BundleRejectedError("entry is a symbolic link", name)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise BundleRejectedError("entry is not a regular file or folder", name)
        if info.is_dir() or kind == stat.S_IFDIR:
            _checked_folder_entry(name)
            continue
        entries.append((plan.add_file(name, info.file_size), functools.partial(zf.open, info)))
    _write_planned(entries, target, plan)


def _zip_entry_name(info: zipfile.ZipInfo) -> str:
    name = info.filename
    if info.flag_bits & 0x800 or name.isascii():
        return name
    # Without the UTF-8 flag zipfile decodes names as cp437; most tools write UTF-8 anyway.
    try:
        return name.encode("cp437").decode("utf-8")
    except UnicodeError:
        raise BundleRejectedError("entry name is not valid UTF-8", name) from None


def _extract_tar(archive: Path, target: Path, limits: BundleLimits) -> None:
    try:
        with tarfile.open(archive, "r:gz") as tf:
            _extract_tar_members(tf, target, _Plan(limits, archive.stat().st_size))
    except BundleRejectedError:
        raise
    except Exception as exc:
        raise BundleRejectedError(
            f"not a readable .tar.gz archive: {type(exc).__name__}: {exc}", archive.name
        ) from None


def _extract_tar_members(tf: tarfile.TarFile, target: Path, plan: _Plan) -> None:
    entries: list[tuple[PurePosixPath, _Opener]] = []
    # Member by member: a header over a limit stops the reading before its data is inflated.
    for member in tf:
        if member.issym() or member.islnk():
            raise BundleRejectedError("entry is a link", member.name)
        if member.isdir():
            _checked_folder_entry(member.name)
            continue
        if not member.isfile():
            raise BundleRejectedError("entry is not a regular file or folder", member.name)
        path = plan.add_file(member.name, member.size)
        entries.append((path, functools.partial(tf.extractfile, member)))
    _write_planned(entries, target, plan)


def _write_planned(entries: list[tuple[PurePosixPath, _Opener]], target: Path, plan: _Plan) -> None:
    total = 0
    for path, open_entry in entries:
        source = open_entry()
        if source is None:
            raise BundleRejectedError("entry has no content", str(path))
        destination = target.joinpath(*path.parts)
        with source:
            try:
                total += _copy_bounded(source, destination, str(path), plan)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                raise BundleRejectedError("entry collides with another entry", str(path)) from None
        if total > plan.limits.max_total_bytes:
            raise BundleTooLargeError(
                f"bundle expands past the limit of {plan.limits.max_total_bytes} bytes"
            )
        plan.check_ratio(total)
