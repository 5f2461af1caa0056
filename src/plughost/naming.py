"""Namespaces and their ``sys.modules`` keys.

Every namespace owns one synthetic package, ``plughost_ns.<component>``, and
every module of a bundle loaded into it lives below that package:

    Namespace("acme").module_name("notifier_agent")
        == "plughost_ns.t_acme.notifier_agent"
    Namespace("acme", snapshot="jan").module_name("notifier_agent")
        == "plughost_ns.t_acme__snapshot__jan.notifier_agent"

The encoding is injective and reversible for any strings:

* A namespace component is ``t_`` followed by its fields (tenant, then each
  dimension's key and value, keys sorted) joined by ``__``. Inside a field,
  ASCII letters and digits stand for themselves and every other character is
  escaped as ``_u`` (``_``), ``_d`` (``-``), ``_p`` (``.``) or ``_x<hex>x``.
  An escaped field never contains ``__`` and never ends with ``_``, so the
  fields split back apart unambiguously.
* A stem is a dotted module path inside the bundle (``helpers``,
  ``pkg.sub``). Each part that is a Python identifier is kept as it is, so
  that ordinary and relative imports inside the bundle resolve to the same
  keys; any other part (``my-agent``, ``2fast``, unicode that is not an
  identifier, the empty string) is written as ``_x__`` plus its escaped form.
  Identifiers that themselves start with ``_x__`` are escaped too, which
  keeps the two forms apart, and so are identifiers that NFKC normalization
  would change (the parser would import them under another name).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping

ROOT_PACKAGE = "plughost_ns"
"""The synthetic top-level package under which every namespace lives."""

_NAMESPACE_MARK = "t_"
_FIELD_SEPARATOR = "__"
RESERVED_STEM_PREFIX = "_x__"
"""Marks an escaped stem part; bundle files may not use it in their names."""
_SHORT_ESCAPES = {"_": "u", "-": "d", ".": "p"}
_SHORT_UNESCAPES = {code: char for char, code in _SHORT_ESCAPES.items()}

TENANT_NAME_RULE = "1-64 characters of [A-Za-z0-9_.-], not starting with '.'"
TENANT_NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"
_TENANT_NAME = re.compile(TENANT_NAME_PATTERN)
_PLAIN = re.compile(r"[A-Za-z0-9]*")


def _escape(text: str) -> str:
    if _PLAIN.fullmatch(text):
        return text
    out: list[str] = []
    for char in text:
        if char.isascii() and char.isalnum():
            out.append(char)
        elif char in _SHORT_ESCAPES:
            out.append("_" + _SHORT_ESCAPES[char])
        else:
            out.append(f"_x{ord(char):x}x")
    return "".join(out)


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "_":
            if not (char.isascii() and char.isalnum()):
                raise ValueError(f"unexpected character {char!r} in encoded field {text!r}")
            out.append(char)
            i += 1
            continue
        code = text[i + 1 : i + 2]
        if code in _SHORT_UNESCAPES:
            out.append(_SHORT_UNESCAPES[code])
            i += 2
        elif code == "x":
            end = text.find("x", i + 2)
            digits = text[i + 2 : end]
            if end < 0 or not digits or any(d not in "0123456789abcdef" for d in digits):
                raise ValueError(f"bad escape at offset {i} in encoded field {text!r}")
            out.append(chr(int(digits, 16)))
            i = end + 1
        else:
            raise ValueError(f"bad escape at offset {i} in encoded field {text!r}")
    return "".join(out)


def _encode_stem_part(part: str) -> str:
    if is_plain_stem_part(part):
        return part
    return RESERVED_STEM_PREFIX + _escape(part)


def _decode_stem_part(part: str) -> str:
    if part.startswith(RESERVED_STEM_PREFIX):
        return _unescape(part[len(RESERVED_STEM_PREFIX) :])
    if not is_plain_stem_part(part):
        raise ValueError(f"stem part {part!r} is neither a plain identifier nor escaped")
    return part


def is_plain_stem_part(part: str) -> bool:
    """Return True when ``part`` keeps its own name as a ``sys.modules`` key part.

    That is an identifier as the parser would read it: unchanged by NFKC, which
    Python applies to identifiers in source, and without the escape prefix.
    """
    return (
        part.isidentifier()
        and not part.startswith(RESERVED_STEM_PREFIX)
        and unicodedata.normalize("NFKC", part) == part
    )


def check_tenant_name(tenant: str) -> str:
    """Return ``tenant`` if it is a valid tenant name; raise ``ValueError`` otherwise.

    Tenant names become folder names and URL path segments, so they follow
    :data:`TENANT_NAME_RULE`. :class:`Namespace` itself accepts any non-empty
    string; this check is for the places that create tenants.
    """
    if not isinstance(tenant, str) or not _TENANT_NAME.fullmatch(tenant):
        raise ValueError(f"invalid tenant name {tenant!r}: expected {TENANT_NAME_RULE}")
    return tenant


@functools.total_ordering
class Namespace:
    """The key of one isolated module tree: a tenant plus optional dimensions.

    ``Namespace("acme")`` is tenant acme's live code; ``snapshot``, ``version``,
    ``env`` and any further keyword (``user=...``) make a separate namespace.
    A dimension given as ``None`` is absent; integers are stored as strings,
    so ``version=7`` and ``version="7"`` are the same namespace.

    Instances are immutable, hashable and ordered (by tenant, then dimensions).

    Raises:
        ValueError: the tenant is empty.
        TypeError: the tenant or a dimension value is not a string (or int).
    """

    __slots__ = ("_dimensions", "_hash", "_package_name", "_tenant")

    _tenant: str
    _dimensions: tuple[tuple[str, str], ...]
    _hash: int
    _package_name: str

    def __init__(
        self,
        tenant: str,
        *,
        snapshot: str | int | None = None,
        version: str | int | None = None,
        env: str | None = None,
        **more: str | int | None,
    ) -> None:
        if not isinstance(tenant, str):
            raise TypeError(f"tenant must be a str, not {type(tenant).__name__}")
        if not tenant:
            raise ValueError("tenant must not be empty")
        given: dict[str, str | int | None] = {"snapshot": snapshot, "version": version, "env": env}
        given.update(more)
        dimensions: list[tuple[str, str]] = []
        for key, value in sorted(given.items()):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise TypeError(
                    f"dimension {key}= must be a str or int, not {type(value).__name__}"
                )
            dimensions.append((key, str(value)))
        self._init(tenant, tuple(dimensions))

    def _init(self, tenant: str, dimensions: tuple[tuple[str, str], ...]) -> None:
        object.__setattr__(self, "_tenant", tenant)
        object.__setattr__(self, "_dimensions", dimensions)
        object.__setattr__(self, "_hash", hash((tenant, dimensions)))
        fields = [tenant]
        for key, value in dimensions:
            fields += [key, value]
        component = _NAMESPACE_MARK + _FIELD_SEPARATOR.join(_escape(f) for f in fields)
        # Every import and every load asks for it: worked out once.
        object.__setattr__(self, "_package_name", f"{ROOT_PACKAGE}.{component}")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Namespace is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Namespace is immutable")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self._tenant, self._dimensions))

    @property
    def tenant(self) -> str:
        """The tenant that owns this namespace."""
        return self._tenant

    @property
    def dimensions(self) -> Mapping[str, str]:
        """The dimensions other than the tenant, keys sorted."""
        return dict(self._dimensions)

    @property
    def snapshot(self) -> str | None:
        return self.dimensions.get("snapshot")

    @property
    def version(self) -> str | None:
        return self.dimensions.get("version")

    @property
    def env(self) -> str | None:
        return self.dimensions.get("env")

    @property
    def package_name(self) -> str:
        """The ``sys.modules`` key of this namespace's synthetic package."""
        return self._package_name

    def module_name(self, stem: str) -> str:
        """Return the ``sys.modules`` key of bundle module ``stem`` in this namespace.

        ``stem`` is a dotted path inside the bundle: ``"helpers"``, ``"pkg.sub"``.
        """
        return self.package_name + "." + ".".join(_encode_stem_part(p) for p in stem.split("."))

    @classmethod
    def parse_package_name(cls, name: str) -> Namespace:
        """Return the namespace whose :attr:`package_name` is ``name``.

        Raises:
            ValueError: ``name`` is not a namespace package key.
        """
        root, dot, component = name.partition(".")
        if root != ROOT_PACKAGE or not dot or "." in component:
            raise ValueError(f"{name!r} is not a plughost namespace package name")
        if not component.startswith(_NAMESPACE_MARK):
            raise ValueError(f"{name!r} is not a plughost namespace package name")
        fields = [_unescape(f) for f in component[len(_NAMESPACE_MARK) :].split(_FIELD_SEPARATOR)]
        if len(fields) % 2 != 1:
            raise ValueError(f"{name!r} has a dimension without a value")
        keys, values = fields[1::2], fields[2::2]
        if not fields[0] or keys != sorted(set(keys)):
            raise ValueError(f"{name!r} has an empty tenant or unsorted or repeated dimensions")
        return _rebuild(fields[0], tuple(zip(keys, values, strict=True)))

    @classmethod
    def parse_module_name(cls, name: str) -> tuple[Namespace, str]:
        """Return ``(namespace, stem)`` for a key made by :meth:`module_name`.

        Raises:
            ValueError: ``name`` is not a bundle module key.
        """
        parts = name.split(".", 2)
        if len(parts) != 3:
            raise ValueError(f"{name!r} is not a plughost bundle module name")
        namespace = cls.parse_package_name(f"{parts[0]}.{parts[1]}")
        stem = ".".join(_decode_stem_part(p) for p in parts[2].split("."))
        return namespace, stem

    def _key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (self._tenant, self._dimensions)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Namespace):
            return NotImplemented
        # The package name encodes tenant and dimensions one to one; one string compare.
        return self is other or self._package_name == other._package_name

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Namespace):
            return NotImplemented
        return self._key() < other._key()

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        args = [repr(self._tenant)] + [f"{k}={v!r}" for k, v in self._dimensions]
        return f"Namespace({', '.join(args)})"


def _rebuild(tenant: str, dimensions: tuple[tuple[str, str], ...]) -> Namespace:
    # Bypasses keyword parsing: a dimension may be named like a parameter of __init__.
    namespace = object.__new__(Namespace)
    namespace._init(tenant, dimensions)
    return namespace
