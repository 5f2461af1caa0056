"""Namespaces and the encoding of their sys.modules keys."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plughost import Namespace
from plughost.naming import ROOT_PACKAGE, check_tenant_name

texts = st.text(min_size=1, max_size=20)
tenant_like = st.text(alphabet="ab_-.0123456789", min_size=1, max_size=8)
dimension_keys = st.sampled_from(["snapshot", "version", "env", "user", "a_b", "x"])
dimensions = st.dictionaries(dimension_keys, st.one_of(texts, tenant_like), max_size=3)
stems = st.lists(st.one_of(texts, tenant_like), min_size=1, max_size=3).map(".".join)
namespaces = st.builds(
    lambda tenant, dims: Namespace(tenant, **dims), st.one_of(texts, tenant_like), dimensions
)


def _is_dotted_identifier(key: str) -> bool:
    root, component, *_ = key.split(".")
    return all(part.isidentifier() for part in key.split(".")) and (root + component).isascii()


@given(namespaces, stems)
def test_module_name_round_trips(namespace: Namespace, stem: str) -> None:
    key = namespace.module_name(stem)
    assert Namespace.parse_module_name(key) == (namespace, stem)
    assert _is_dotted_identifier(key)
    assert key.startswith(namespace.package_name + ".")


@given(namespaces, stems, namespaces, stems)
def test_distinct_inputs_give_distinct_keys(
    ns1: Namespace, stem1: str, ns2: Namespace, stem2: str
) -> None:
    if (ns1, stem1) != (ns2, stem2):
        assert ns1.module_name(stem1) != ns2.module_name(stem2)


@given(namespaces, namespaces)
def test_package_names_are_distinct_and_single_component(ns1: Namespace, ns2: Namespace) -> None:
    assert ns1.package_name.count(".") == 1
    assert (ns1.package_name == ns2.package_name) == (ns1 == ns2)
    assert Namespace.parse_package_name(ns1.package_name) == ns1


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((Namespace("a_b"), "c"), (Namespace("a"), "b_c")),
        ((Namespace("a-b"), "c"), (Namespace("a_b"), "c")),
        ((Namespace("a.b"), "c"), (Namespace("a"), "b.c")),
        ((Namespace("jan"), "x"), (Namespace("acme", snapshot="jan"), "x")),
        ((Namespace("acme_snapshot_jan"), "x"), (Namespace("acme", snapshot="jan"), "x")),
        ((Namespace("acme", snapshot="v_1"), "x"), (Namespace("acme", version="1"), "x")),
        ((Namespace("acme", snapshot="a__b"), "x"), (Namespace("acme", snapshot="a", b="x"), "x")),
        ((Namespace("acme"), "my-agent"), (Namespace("acme"), "my_agent")),
        ((Namespace("acme"), "_x__my_dagent"), (Namespace("acme"), "my-agent")),
        ((Namespace("acme"), "\ufb01le"), (Namespace("acme"), "file")),
    ],
)
def test_cases_the_naive_encoding_confuses_stay_apart(
    first: tuple[Namespace, str], second: tuple[Namespace, str]
) -> None:
    assert first[0].module_name(first[1]) != second[0].module_name(second[1])


def test_plain_stems_keep_their_names_so_relative_imports_work() -> None:
    ns = Namespace("acme", snapshot="jan")
    assert ns.module_name("notifier_agent") == ns.package_name + ".notifier_agent"
    assert ns.module_name("pkg.sub") == ns.package_name + ".pkg.sub"
    assert ns.package_name.startswith(ROOT_PACKAGE + ".")


def test_unicode_digits_and_punctuation_encode_to_ascii_identifiers() -> None:
    ns = Namespace("7-élan.team", snapshot="été 2026", user="ü")
    key = ns.module_name("2fast")
    assert _is_dotted_identifier(key)
    assert Namespace.parse_module_name(key) == (ns, "2fast")


def test_namespace_is_immutable_hashable_ordered_and_picklable() -> None:
    ns = Namespace("acme", version=7, env="staging")
    assert ns == Namespace("acme", env="staging", version="7")
    assert hash(ns) == hash(Namespace("acme", env="staging", version="7"))
    assert ns.version == "7" and ns.env == "staging" and ns.snapshot is None
    assert ns.dimensions == {"env": "staging", "version": "7"}
    assert Namespace("acme") != Namespace("acme", snapshot="jan")
    assert sorted([Namespace("b"), Namespace("a", snapshot="x"), Namespace("a")]) == [
        Namespace("a"),
        Namespace("a", snapshot="x"),
        Namespace("b"),
    ]
    assert pickle.loads(pickle.dumps(ns)) == ns
    assert repr(ns) == "Namespace('acme', env='staging', version='7')"
    with pytest.raises(AttributeError):
        ns.tenant = "other"  # type: ignore[misc]


def test_bad_namespace_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Namespace("")
    with pytest.raises(TypeError, match="tenant must be a str"):
        Namespace(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="user= must be a str or int"):
        Namespace("acme", user=["x"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key",
    [
        "json",
        "plughost_ns",
        "plughost_ns.acme.x",
        "plughost_ns.t_acme",
        "plughost_ns.t_acme__snapshot.x",
        "plughost_ns.t_ac_qme.x",
        "plughost_ns.t_acme.x-y",
        "plughost_ns.t___snapshot__jan.x",
    ],
)
def test_parse_refuses_keys_it_did_not_make(key: str) -> None:
    with pytest.raises(ValueError):
        Namespace.parse_module_name(key)


@pytest.mark.parametrize("name", ["acme", "a", "a-b_c.d", "7up", "x" * 64])
def test_valid_tenant_names(name: str) -> None:
    assert check_tenant_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "a b", "é", "x" * 65, "../etc"])
def test_invalid_tenant_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid tenant name"):
        check_tenant_name(name)
