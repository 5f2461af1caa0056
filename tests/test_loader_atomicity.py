"""A load that fails at any step leaves sys.modules as it was; the fixed bundle then loads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from plughost import BundleLoadError, BundleRejectedError, Namespace
from plughost.loader import load_bundle, loaded_namespaces

from .conftest import Load, WriteBundle

GOOD = {
    "a_first.py": "import m_middle\nVALUE = m_middle.VALUE\n",
    "m_middle.py": "from z_last import BASE\nVALUE = BASE + 1\n",
    "z_last.py": "BASE = 1\n",
    "pkg/__init__.py": "from .inner import INNER\n",
    "pkg/inner.py": "INNER = 'inner'\n",
}

FAILURES = {
    "syntax error in the first file": ("a_first.py", "import m\nVALUE = (\n", 2, SyntaxError),
    "syntax error in the last file": ("z_last.py", "BASE = 1\ndef broken(:\n", 2, SyntaxError),
    "exception in a module body": (
        "m_middle.py",
        "from z_last import BASE\nVALUE = BASE + 1\nraise RuntimeError('boom')\n",
        3,
        RuntimeError,
    ),
    "missing import": ("z_last.py", "BASE = 1\nimport no_such_module_anywhere\n", 2, ImportError),
    "missing name from a sibling": (
        "m_middle.py",
        "from z_last import NOT_THERE\n",
        1,
        ImportError,
    ),
    "sys.exit at import": ("z_last.py", "import sys\nsys.exit(3)\n", 2, SystemExit),
    "failure in a subpackage module": ("pkg/inner.py", "INNER = 1 / 0\n", 1, ZeroDivisionError),
    "failure in a package __init__": ("pkg/__init__.py", "raise KeyError('k')\n", 1, KeyError),
    "failure in the bundle's own __init__": ("__init__.py", "x = undefined\n", 1, NameError),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_failed_load_changes_nothing_and_the_fixed_bundle_loads(
    write_bundle: WriteBundle, load: Load, case: str
) -> None:
    filename, source, line, cause = FAILURES[case]
    broken = write_bundle({**GOOD, filename: source})
    modules_before = dict(sys.modules)
    path_before = list(sys.path)
    ns = Namespace("atomic", snapshot=case)

    with pytest.raises(BundleLoadError) as caught:
        load_bundle(ns, broken)

    error = caught.value
    assert isinstance(error.cause, cause)
    assert error.file == Path(filename) and error.line == line  # as the bundle names it
    if isinstance(error.cause, SyntaxError):  # its text names the file as the bundle does
        assert str(broken) not in str(error)
    assert f"{filename}:{line}" in str(error) and type(error.cause).__name__ in str(error)
    assert sys.modules == modules_before
    assert sys.path == path_before
    assert loaded_namespaces() == []

    fixed = write_bundle(GOOD)
    loaded = load(ns, fixed)
    assert loaded.modules["a_first"].VALUE == 2
    assert loaded.modules["pkg"].INNER == "inner"


def test_a_failed_load_does_not_disturb_other_loaded_namespaces(
    write_bundle: WriteBundle, load: Load
) -> None:
    other = load(Namespace("bystander"), write_bundle(GOOD))
    keys_before = set(sys.modules)
    with pytest.raises(BundleLoadError):
        load_bundle(Namespace("victim"), write_bundle({**GOOD, "z_last.py": "1/0\n"}))
    assert set(sys.modules) == keys_before
    assert other.is_loaded and other.modules["a_first"].VALUE == 2


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"notifier.v2.py": "X = 1\n"}, "may not contain '.'"),
        ({"_x__hidden.py": "X = 1\n"}, "reserved"),
    ],
)
def test_file_names_that_cannot_be_module_names_are_refused_before_loading(
    write_bundle: WriteBundle, files: dict[str, str], message: str
) -> None:
    modules_before = dict(sys.modules)
    with pytest.raises(BundleRejectedError, match=message):
        load_bundle(Namespace("names"), write_bundle(files))
    assert sys.modules == modules_before


def test_a_source_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    for source in (text, tmp_path / "missing"):
        with pytest.raises(BundleRejectedError, match=r"must be a folder, a \.zip or a \.tar\.gz"):
            load_bundle(Namespace("nope"), source)
