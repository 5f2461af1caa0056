"""Generate a realistic bundle of plugin modules into a folder.

Each module is 60-100 lines of ordinary plugin code: stdlib imports that the
host has already loaded, a regex, dict literals, a dataclass, a handler class
(an ``Enum`` in every third module) and a handful of functions. Every module's
source is distinct (names carry the module number), so a code cache cannot
fold two modules of one bundle into one entry.

With ``sibling_imports`` a module imports one or two earlier modules by plain
name (``import mod_03``, ``from mod_01 import normalize_01``), which only a
host that redirects those imports can resolve.
"""

from __future__ import annotations

import importlib
import random
import shutil
from pathlib import Path

STDLIB_IMPORTS = ("collections", "dataclasses", "enum", "functools", "itertools", "json", "re")
"""What the generated modules import; :func:`preload_imports` loads them before any timing."""

_WORDS = (
    *("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma"),
    *("omega", "invoice", "order", "refund", "ticket", "shipment", "customer", "account"),
    *("ledger", "batch", "quota"),
)


def preload_imports() -> None:
    """Import what the generated modules import, so no benchmark times a first import."""
    for name in STDLIB_IMPORTS:
        importlib.import_module(name)


def module_name(index: int) -> str:
    return f"mod_{index:02d}"


def module_source(index: int, *, sibling_imports: bool, rng: random.Random) -> str:
    """Return the source of module ``index``; sibling imports only name lower indices."""
    n = f"{index:02d}"
    words = rng.sample(_WORDS, k=rng.randint(6, 10))
    lines = [
        f'"""Plugin module {n}: {words[0]} and {words[1]} handling for a tenant."""',
        "",
        "import itertools",
        "import json",
        "import re",
        "from collections import Counter",
        "from dataclasses import dataclass, field",
        "from functools import lru_cache",
    ]
    if index % 3 == 0:
        lines.append("from enum import Enum")
    siblings: list[int] = []
    if sibling_imports and index > 0:
        siblings = sorted(rng.sample(range(index), k=min(index, rng.choice((1, 2)))))
        lines.append(f"import {module_name(siblings[0])}")
        if len(siblings) > 1:
            s = f"{siblings[1]:02d}"
            lines.append(f"from {module_name(siblings[1])} import normalize_{s}")
    lines += [
        "",
        f'PATTERN_{n} = re.compile(r"^(?P<kind>[a-z]+)_(?P<num>\\d{{2,4}})$")',
        f"VERSION_{n} = ({rng.randint(1, 9)}, {rng.randint(0, 20)}, {rng.randint(0, 99)})",
        "",
        f"DEFAULTS_{n} = {{",
        f'    "name": "{module_name(index)}",',
        f'    "retries": {rng.randint(1, 5)},',
        f'    "timeout": {rng.uniform(0.5, 30.0):.2f},',
        f'    "enabled": {rng.choice(("True", "False"))},',
        f'    "tags": {words[:3]!r},',
        "}",
        "",
        f"TABLE_{n} = {{",
    ]
    lines += [f'    "{word}": {rng.randint(0, 999)},' for word in words]
    lines += ["}", ""]
    if siblings:
        first = f"{siblings[0]:02d}"
        lines += [
            f'UPSTREAM_{n} = {{"name": {module_name(siblings[0])}.DEFAULTS_{first}["name"]}}',
            "",
        ]
    if index % 3 == 0:
        lines += [
            "",
            f"class Kind{n}(Enum):",
            *(f"    {word.upper()} = {i}" for i, word in enumerate(words[:4], start=1)),
            "",
        ]
    lines += [
        "",
        "@dataclass",
        f"class Record{n}:",
        "    key: str",
        "    value: int = 0",
        "    tags: list[str] = field(default_factory=list)",
        "",
        "    def describe(self) -> str:",
        "        return f\"{self.key}={self.value} [{', '.join(self.tags)}]\"",
        "",
        "",
        f"class Handler{n}:",
        f'    """Handles {words[2]} events."""',
        "",
        "    def __init__(self, config: dict | None = None) -> None:",
        f"        self.config = {{**DEFAULTS_{n}, **(config or {{}})}}",
        "        self.seen = Counter()",
        "",
        "    @property",
        "    def name(self) -> str:",
        '        return self.config["name"]',
    ]
    for word in words[3 : 3 + rng.randint(1, 3)]:
        lines += [
            "",
            f"    def on_{word}(self, payload: dict) -> dict:",
            f'        self.seen["{word}"] += 1',
            f'        value = payload.get("{word}", TABLE_{n}.get("{word}", 0))',
            '        return {"event": "' + word + '", "value": value * self.config["retries"]}',
        ]
    normalize = "text.strip().lower()"
    if len(siblings) > 1:
        normalize = f"normalize_{siblings[1]:02d}({normalize})"
    lines += [
        "",
        "",
        f"def normalize_{n}(text: str) -> str:",
        f"    return {normalize}",
        "",
        "",
        "@lru_cache(maxsize=128)",
        f"def parse_key_{n}(key: str) -> tuple[str, int] | None:",
        f"    match = PATTERN_{n}.match(normalize_{n}(key))",
        "    if match is None:",
        "        return None",
        '    return match["kind"], int(match["num"])',
        "",
        "",
        f"def parse_{n}(blob: str) -> list[Record{n}]:",
        "    items = json.loads(blob)",
        f"    return [Record{n}(str(i.get('key')), int(i.get('value', 0))) for i in items]",
        "",
        "",
        f"def score_{n}(records: list[Record{n}]) -> int:",
        f"    weights = itertools.cycle(sorted(TABLE_{n}.values()))",
        "    return sum(r.value * w for r, w in zip(records, weights))",
        "",
        "",
        f"def summary_{n}() -> str:",
        f"    return json.dumps({{'defaults': DEFAULTS_{n}, 'version': VERSION_{n}}})",
    ]
    return "\n".join(lines) + "\n"


def write_bundle(
    folder: Path, *, modules: int = 20, sibling_imports: bool = False, seed: int = 20
) -> list[Path]:
    """Write ``modules`` generated files into ``folder`` (created); return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for index in range(modules):
        path = folder / f"{module_name(index)}.py"
        path.write_text(module_source(index, sibling_imports=sibling_imports, rng=rng))
        paths.append(path)
    return paths


def copy_bundle(source: Path, destination: Path) -> None:
    """Copy a generated bundle folder; the copy has the same content at other paths."""
    shutil.copytree(source, destination)


def line_counts(paths: list[Path]) -> list[int]:
    return [len(path.read_text().splitlines()) for path in paths]
