"""Archives are checked entry by entry before anything is written; nothing escapes the target."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import pytest

from plughost import BundleRejectedError, BundleTooLargeError, Namespace
from plughost.bundle import BundleLimits, extract_archive
from plughost.loader import load_bundle

from .corpus import CASES, GZIP, ZIP, tar_archive, tar_entry, zip_archive

ARCHIVE_CASES = [
    name
    for name, case in CASES.items()
    if case.content_type in (ZIP, GZIP) and case.code in ("bundle_rejected", "too_large")
]


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("name", ARCHIVE_CASES)
def test_unsafe_archives_are_refused_and_write_nothing(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    archive = source_dir / ("a.zip" if case.content_type == ZIP else "a.tar.gz")
    archive.write_bytes(case.make(source_dir))
    target = tmp_path / "deep" / "target"
    target.mkdir(parents=True)

    with pytest.raises(BundleRejectedError) as caught:
        extract_archive(archive, target)

    assert case.says in str(caught.value)
    assert isinstance(caught.value, BundleTooLargeError) == (case.code == "too_large")
    assert list(target.iterdir()) == []
    assert {p.name for p in tmp_path.rglob("*")} <= {
        "source",
        "deep",
        "target",
        "case.zip",
        "case.tar.gz",
        archive.name,
    }


def test_a_refused_archive_loads_nothing(tmp_path: Path) -> None:
    archive = zip_archive(tmp_path / "a.zip", [("good.py", b"X = 1\n"), ("../evil.py", b"x")])
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
        zip_archive(tmp_path / "a.zip", list(entries)),
        tar_archive(tmp_path / "a.tar.gz", [(tar_entry(n), d) for n, d in entries]),
    ):
        target = tmp_path / f"target-{archive.name}"
        target.mkdir()
        with pytest.raises(BundleRejectedError, match=message):
            extract_archive(archive, target, limits)
        assert list(target.iterdir()) == []


def test_a_zip_that_lies_about_its_size_cannot_pass_the_limit(tmp_path: Path) -> None:
    archive = zip_archive(tmp_path / "liar.zip", [("liar.py", b"\0" * 4096)])
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


def test_safe_archives_with_folders_and_unicode_names_extract(tmp_path: Path) -> None:
    archive = zip_archive(
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
    archive = zip_archive(tmp_path / "method.zip", [("m.py", b"x = 1\n" * 100)])
    data = bytearray(archive.read_bytes())
    # The compression method, in the local header (offset 8) and the central directory (10).
    struct.pack_into("<H", data, 8, 99)
    struct.pack_into("<H", data, data.rfind(b"PK\x01\x02") + 10, 99)
    archive.write_bytes(bytes(data))
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(BundleRejectedError, match="not a readable zip archive"):
        extract_archive(archive, target)


def test_an_archive_of_ordinary_ratio_passes_the_ratio_check(tmp_path: Path) -> None:
    source = os.urandom(1 << 19).hex().encode()  # 1 MiB that compresses about 2 times
    archive = zip_archive(tmp_path / "ok.zip", [("data.txt", source)])
    target = tmp_path / "target"
    target.mkdir()
    extract_archive(archive, target)
    assert (target / "data.txt").read_bytes() == source
