"""The bad-input corpus: malicious or broken bundles and payloads, and what each must get.

Python bundles that misbehave at import live as files under ``bundles/``.
Archives are built here, byte for byte, because most of them cannot be made
with ordinary tools (a zip whose entry leaves its target, a tar whose member
is a hard link to ``/etc/passwd``, a name that is not UTF-8). Every entry of
:data:`CASES` says what the server must answer; ``tests/test_bad_input_corpus.py``
sends them all to a real server while other tenants are being called.
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BUNDLES = Path(__file__).resolve().parent / "bundles"


# -- archive makers ------------------------------------------------------------------


def zip_archive(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def tar_archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tar_entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def non_utf8_tar(path: Path) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT, encoding="latin-1") as tf:
        info = tarfile.TarInfo("caf\xe9.py")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    return path


def non_utf8_zip(path: Path) -> Path:
    zip_archive(path, [("cafX.py", b"x")])
    # Without the UTF-8 flag, the name bytes 'caf\xe9' are Latin-1, not UTF-8.
    path.write_bytes(path.read_bytes().replace(b"cafX.py", b"caf\xe9.py"))
    return path


def zipped_bundle(name: str, path: Path) -> Path:
    """The corpus bundle folder ``bundles/<name>`` as a zip at ``path``."""
    folder = BUNDLES / name
    files = sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)
    return zip_archive(path, [(p.relative_to(folder).as_posix(), p.read_bytes()) for p in files])


# -- the cases -------------------------------------------------------------------------

ZIP = "application/zip"
GZIP = "application/gzip"
JSON = "application/json"


@dataclass(frozen=True)
class Case:
    """One bad input: how to build its body, and the error it must get.

    ``path`` is a route with ``{tenant}`` for the tenant the case deploys to;
    ``placement`` is sent as ``?placement=`` on bundle uploads.
    """

    make: Callable[[Path], bytes]
    content_type: str
    status: int
    code: str
    says: str
    method: str = "PUT"
    path: str = "/api/tenants/{tenant}/bundle"
    placement: str | None = None


def _file(maker: Callable[[Path], Path], name: str) -> Callable[[Path], bytes]:
    return lambda folder: maker(folder / name).read_bytes()


def _zip_of(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Callable[[Path], bytes]:
    return _file(lambda p: zip_archive(p, entries), "case.zip")


def _tar_of(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Callable[[Path], bytes]:
    return _file(lambda p: tar_archive(p, members), "case.tar.gz")


def _bundle(name: str) -> Callable[[Path], bytes]:
    return _file(lambda p: zipped_bundle(name, p), f"{name}.zip")


MEGABYTE = 1 << 20
DEEP = b"[" * 100_000 + b"]" * 100_000

CASES: dict[str, Case] = {
    "zip bomb by ratio": Case(
        _zip_of([(f"zeros{i}.bin", b"\0" * MEGABYTE) for i in range(12)]),
        ZIP,
        413,
        "too_large",
        "times its size",
    ),
    "tar.gz bomb by ratio": Case(
        _tar_of([(tar_entry(f"zeros{i}.bin"), b"\0" * MEGABYTE) for i in range(12)]),
        GZIP,
        413,
        "too_large",
        "times its size",
    ),
    "zip bomb by declared size": Case(
        _zip_of([("zeros.bin", b"\0" * 20 * MEGABYTE)]), ZIP, 413, "too_large", "over the limit"
    ),
    "zip slip": Case(_zip_of([("../evil.py", b"x")]), ZIP, 400, "bundle_rejected", "'..'"),
    "zip slip, deep": Case(
        _zip_of([("ok/../../evil.py", b"x")]), ZIP, 400, "bundle_rejected", "'..'"
    ),
    "tar slip": Case(
        _tar_of([(tar_entry("../evil.py"), b"x")]), GZIP, 400, "bundle_rejected", "'..'"
    ),
    "zip absolute path": Case(
        _zip_of([("/tmp/evil.py", b"x")]), ZIP, 400, "bundle_rejected", "absolute"
    ),
    "zip drive letter": Case(
        _zip_of([("C:/evil.py", b"x")]), ZIP, 400, "bundle_rejected", "absolute"
    ),
    "zip backslash": Case(
        _zip_of([("..\\evil.py", b"x")]), ZIP, 400, "bundle_rejected", "backslash"
    ),
    "tar absolute path": Case(
        _tar_of([(tar_entry("/etc/evil.py"), b"x")]), GZIP, 400, "bundle_rejected", "absolute"
    ),
    "zip symlink": Case(
        _zip_of([(zip_symlink("link"), b"/etc")]), ZIP, 400, "bundle_rejected", "symbolic link"
    ),
    "tar symlink": Case(
        _tar_of([(tar_entry("l", tarfile.SYMTYPE, "/etc/passwd"), None)]),
        GZIP,
        400,
        "bundle_rejected",
        "is a link",
    ),
    "tar hardlink": Case(
        _tar_of([(tar_entry("l", tarfile.LNKTYPE, "/etc/passwd"), None)]),
        GZIP,
        400,
        "bundle_rejected",
        "is a link",
    ),
    "tar device": Case(
        _tar_of([(tar_entry("dev", tarfile.CHRTYPE), None)]),
        GZIP,
        400,
        "bundle_rejected",
        "not a regular file",
    ),
    "tar fifo": Case(
        _tar_of([(tar_entry("p", tarfile.FIFOTYPE), None)]),
        GZIP,
        400,
        "bundle_rejected",
        "not a regular file",
    ),
    "zip duplicate entries": Case(
        _zip_of([("a.py", b"A = 1\n"), ("a.py", b"A = 2\n")]),
        ZIP,
        400,
        "bundle_rejected",
        "appears twice",
    ),
    "zip non-UTF-8 name": Case(
        _file(non_utf8_zip, "case.zip"), ZIP, 400, "bundle_rejected", "not valid UTF-8"
    ),
    "tar non-UTF-8 name": Case(
        _file(non_utf8_tar, "case.tar.gz"), GZIP, 400, "bundle_rejected", "not valid UTF-8"
    ),
    "10,000-file bundle": Case(
        _zip_of([(f"m{i}.py", b"") for i in range(10_000)]),
        ZIP,
        413,
        "too_large",
        "more than 5000 files",
    ),
    "truncated zip": Case(
        lambda _: b"PK\x03\x04garbage", ZIP, 400, "bundle_rejected", "not a readable zip"
    ),
    "truncated gzip": Case(
        lambda _: b"\x1f\x8b\x08garbage", GZIP, 400, "bundle_rejected", "tar.gz"
    ),
    "syntax error": Case(
        _bundle("syntax_error"), ZIP, 422, "bundle_load_failed", "broken_agent.py:5: SyntaxError"
    ),
    "sys.exit at import": Case(
        _bundle("sys_exit"), ZIP, 422, "bundle_load_failed", "quitter.py:3: SystemExit"
    ),
    "sys.modules written under other namespaces' keys": Case(
        _bundle("pollute_sys_modules"),
        ZIP,
        422,
        "bundle_load_failed",
        "changed sys.modules keys outside its namespace: plughost_ns.t_good",
    ),
    "sys.modules: a host module replaced, a stdlib one removed": Case(
        _bundle("replace_host_module"),
        ZIP,
        422,
        "bundle_load_failed",
        "changed sys.modules keys outside its namespace: json, plughost.agent",
    ),
    "sys.exit at import, in a worker": Case(
        _bundle("sys_exit"), ZIP, 422, "bundle_load_failed", "SystemExit", placement="process"
    ),
    "os._exit at import, in a worker": Case(
        _bundle("os_exit"),
        ZIP,
        422,
        "bundle_load_failed",
        "exited before it was ready",
        placement="process",
    ),
    "endless loop at import, in a worker": Case(
        _bundle("import_loop"),
        ZIP,
        422,
        "bundle_load_failed",
        "TimeoutError: not ready after",
        placement="process",
    ),
    "deeply nested JSON bundle": Case(
        lambda _: DEEP, JSON, 400, "invalid_json", "nested too deeply"
    ),
    "deeply nested call arguments": Case(
        lambda _: b'{"args": {"a": ' + DEEP + b"}}",
        JSON,
        400,
        "invalid_json",
        "parsing the body",
        method="POST",
        path="/api/tenants/good/agents/Notifier/call",
    ),
    "deeply nested event payload": Case(
        lambda _: b'{"event_name": "a.b", "payload": {"a": ' + DEEP + b"}}",
        JSON,
        400,
        "invalid_json",
        "not valid JSON: recursion limit exceeded",
        method="POST",
        path="/api/events",
    ),
    "huge call arguments": Case(
        lambda _: b'{"args": {"message": "' + b"x" * 50 * MEGABYTE + b'"}}',
        JSON,
        413,
        "too_large",
        "over 1048576 bytes",
        method="POST",
        path="/api/tenants/good/agents/Notifier/call",
    ),
    "huge JSON bundle": Case(
        lambda _: b'{"agents": [{"filename": "a.py", "source": "' + b"#" * 70 * MEGABYTE + b'"}]}',
        JSON,
        413,
        "too_large",
        "over 67108864 bytes",
    ),
}
