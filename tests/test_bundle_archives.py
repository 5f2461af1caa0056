"""Archives are checked entry by entry before anything is written; nothing escapes the target."""

from __future__ import annotations

import io
import os
import stat
import struct
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from plughost import BundleRejectedError, BundleTooLargeError, Namespace
from plughost.bundle import BundleLimits, extract_archive
from plughost.loader import load_bundle


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _tar_info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def _zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


Maker = Callable[[Path], Path]

REFUSED: dict[str, tuple[Maker, str]] = {
    "zip slip": (lambda d: _zip(d / "a.zip", [("../evil.py", b"x")]), "'..'"),
    "zip slip deep": (lambda d: _zip(d / "a.zip", [("ok/../../evil.py", b"x")]), "'..'"),
    "zip absolute path": (lambda d: _zip(d / "a.zip", [("/tmp/evil.py", b"x")]), "absolute"),
    "zip drive letter": (lambda d: _zip(d / "a.zip", [("C:/evil.py", b"x")]), "absolute"),
    "zip backslash": (lambda d: _zip(d / "a.zip", [("..\\evil.py", b"x")]), "backslash"),
    "zip symlink": (lambda d: _zip(d / "a.zip", [(_zip_symlink("link"), b"/etc")]), "symbolic"),
    "zip duplicate entries": (
        lambda d: _zip(d / "a.zip", [("a.py", b"1"), ("a.py", b"2")]),
        "twice",
    ),
    "tar slip": (lambda d: _tar(d / "a.tar.gz", [(_tar_info("../evil.py"), b"x")]), "'..'"),
    "tar absolute path": (
        lambda d: _tar(d / "a.tar.gz", [(_tar_info("/etc/evil.py"), b"x")]),
        "absolute",
    ),
    "tar symlink": (
        lambda d: _tar(d / "a.tar.gz", [(_tar_info("l", tarfile.SYMTYPE, "/etc/passwd"), None)]),
        "link",
    ),
    "tar hardlink": (
        lambda d: _tar(d / "a.tar.gz", [(_tar_info("l", tarfile.LNKTYPE, "/etc/passwd"), None)]),
        "link",
    ),
    "tar device": (
        lambda d: _tar(d / "a.tar.gz", [(_tar_info("dev", tarfile.CHRTYPE), None)]),
        "not a regular file",
    ),
    "tar fifo": (
        lambda d: _tar(d / "a.tar.gz", [(_tar_info("p", tarfile.FIFOTYPE), None)]),
        "not a regular file",
    ),
    "not an archive": (lambda d: _write(d / "a.zip", b"just some text"), "not a .zip or .tar.gz"),
    "truncated zip": (lambda d: _write(d / "a.zip", b"PK\x03\x04garbage"), "not a readable zip"),
    "truncated gzip": (lambda d: _write(d / "a.tar.gz", b"\x1f\x8b\x08garbage"), "tar.gz"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("case", list(REFUSED))
def test_unsafe_archives_are_refused_and_write_nothing(tmp_path: Path, case: str) -> None:
    make, message = REFUSED[case]
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    archive = make(source_dir)
    target = tmp_path / "deep" / "target"
    target.mkdir(parents=True)

    with pytest.raises(BundleRejectedError) as caught:
        extract_archive(archive, target)

    assert message in str(caught.value)
    assert list(target.iterdir()) == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["source", archive.name, "deep", "target"]
    )


def test_a_refused_archive_loads_nothing(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [("good.py", b"X = 1\n"), ("../evil.py", b"x")])
    modules_before = dict(sys.modules)
    with pytest.raises(BundleRejectedError, match=r"'\.\./evil\.py'"):
        load_bundle(Namespace("refused"), archive)
    assert sys.modules == modules_before
    assert not (tmp_path.parent / "evil.py").exists()


@pytest.mark.parametrize(
    ("limits", "entries", "message"),
    [
        (BundleLimits(max_file_bytes=100), [("big.py", b"x" * 101)], "over the limit of 100"),
        (BundleLimits(max_files=3), [(f"m{i}.py", b"") for i in range(4)], "more than 3 files"),
        (
            BundleLimits(max_total_bytes=250),
            [(f"m{i}.py", b"x" * 100) for i in range(3)],
            "over the limit of 250 bytes",
        ),
    ],
)
def test_limits_are_enforced(
    tmp_path: Path, limits: BundleLimits, entries: list[tuple[str, bytes]], message: str
) -> None:
    for archive in (
        _zip(tmp_path / "a.zip", list(entries)),
        _tar(tmp_path / "a.tar.gz", [(_tar_info(n), d) for n, d in entries]),
    ):
        target = tmp_path / f"target-{archive.name}"
        target.mkdir()
        with pytest.raises(BundleRejectedError, match=message):
            extract_archive(archive, target, limits)
        assert list(target.iterdir()) == []


def test_a_zip_bomb_is_refused_by_its_declared_size(tmp_path: Path) -> None:
    bomb = _zip(tmp_path / "bomb.zip", [("bomb.py", b"\0" * (20 * 1024 * 1024))])
    assert bomb.stat().st_size < 100 * 1024
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(BundleRejectedError, match="over the limit"):
        extract_archive(bomb, target)
    assert list(target.iterdir()) == []


def test_a_zip_that_lies_about_its_size_cannot_pass_the_limit(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "liar.zip", [("liar.py", b"\0" * 4096)])
    data = bytearray(archive.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    # The uncompressed size in the central directory (offset 24) and local header (offset 22).
    struct.pack_into("<I", data, central + 24, 10)
    struct.pack_into("<I", data, 22, 10)
    archive.write_bytes(bytes(data))
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(BundleRejectedError):
        extract_archive(archive, target, BundleLimits(max_file_bytes=100))
    assert sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) <= 100


def _non_utf8_tar(path: Path) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT, encoding="latin-1") as tf:
        info = tarfile.TarInfo("caf\xe9.py")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    return path


def _non_utf8_zip(path: Path) -> Path:
    _zip(path, [("cafX.py", b"x")])
    # Without the UTF-8 flag, the name bytes 'caf\xe9' are Latin-1, not UTF-8.
    path.write_bytes(path.read_bytes().replace(b"cafX.py", b"caf\xe9.py"))
    return path


@pytest.mark.parametrize("make", [_non_utf8_tar, _non_utf8_zip])
def test_non_utf8_entry_names_are_refused(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    archive = make(tmp_path / "names.archive")
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(BundleRejectedError, match="not valid UTF-8"):
        extract_archive(archive, target)
    assert list(target.iterdir()) == []


def test_safe_archives_with_folders_and_unicode_names_extract(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "ok.zip",
        [
            ("./", b""),
            ("pkg/", b""),
            ("pkg/__init__.py", b""),
            ("pkg/été.txt", b"hi"),
            ("./top.py", b"X=1"),
        ],
    )
    target = tmp_path / "target"
    target.mkdir()
    extract_archive(archive, target)
    assert (target / "pkg" / "été.txt").read_text() == "hi"
    assert (target / "top.py").read_text() == "X=1"
    assert sorted(os.listdir(target)) == ["pkg", "top.py"]


def test_a_zip_with_an_unsupported_compression_method_is_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "method.zip", [("m.py", b"x = 1\n" * 100)])
    data = bytearray(archive.read_bytes())
    # The compression method, in the local header (offset 8) and the central directory (10).
    struct.pack_into("<H", data, 8, 99)
    struct.pack_into("<H", data, data.rfind(b"PK\x01\x02") + 10, 99)
    archive.write_bytes(bytes(data))
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(BundleRejectedError, match="not a readable zip archive"):
        extract_archive(archive, target)


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_a_compression_bomb_within_every_size_limit_is_refused_by_its_ratio(
    tmp_path: Path, kind: str
) -> None:
    # 12 files of 1 MiB of zeros: each under the file limit, all under the total.
    entries = [(f"zeros{i}.bin", b"\0" * (1 << 20)) for i in range(12)]
    if kind == "zip":
        bomb = _zip(tmp_path / "bomb.zip", entries)
    else:
        bomb = _tar(tmp_path / "bomb.tar.gz", [(_tar_info(n), d) for n, d in entries])
    assert bomb.stat().st_size * 100 < 12 << 20
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(BundleTooLargeError, match="more than 100 times its size"):
        extract_archive(bomb, target)
    assert list(target.iterdir()) == []


def test_an_archive_of_ordinary_ratio_passes_the_ratio_check(tmp_path: Path) -> None:
    source = os.urandom(1 << 19).hex().encode()  # 1 MiB that compresses about 2 times
    archive = _zip(tmp_path / "ok.zip", [("data.txt", source)])
    target = tmp_path / "target"
    target.mkdir()
    extract_archive(archive, target)
    assert (target / "data.txt").read_bytes() == source
