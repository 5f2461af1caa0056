"""The data folder on its own: real files under tmp_path, real SQLite, no network."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from plughost import DataFolderInUseError, DuplicateSnapshotError
from plughost.bundle import manifest_digest
from plughost.store import Deployment, GarbageReport, Store, StoredMod


def _files(word: str) -> tuple[dict[str, bytes], dict[str, str]]:
    """A small bundle's files and its manifest (relative path -> sha256)."""
    files = {
        "notifier_agent.py": f"WORD = {word!r}\n".encode(),
        "pkg/helpers.py": b"def decorate(m):\n    return m\n",
    }
    return files, {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "data", keep_versions=2)
    opened.open()
    yield opened
    opened.close()


def _deploy(store: Store, tenant: str, word: str, placement: str = "inprocess") -> Deployment:
    files, manifest = _files(word)
    store.put_files(files, manifest)
    version = store.next_version(tenant)
    return store.record_deployment(tenant, version, manifest, ["Notifier"], {}, placement)


def test_open_creates_the_folder_and_close_releases_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = Store(data)
    store.open()
    assert (data / "plughost.db").is_file() and (data / "blobs").is_dir()
    assert (data / "bundles").is_dir() and (data / "lock").is_file()
    store.close()
    store.close()  # a second close is harmless
    with pytest.raises(RuntimeError, match="not open"):
        store.current_deployments()
    again = Store(data)
    again.open()
    assert again.current_deployments() == {}
    again.close()


def test_a_second_open_of_the_same_folder_is_refused(store: Store) -> None:
    second = Store(store.data_dir)
    with pytest.raises(DataFolderInUseError) as caught:
        second.open()
    assert caught.value.data_dir == store.data_dir
    store.close()
    second.open()  # once released, the folder opens again
    second.close()


def test_a_deployment_round_trips_through_the_database_and_the_blobs(store: Store) -> None:
    files, manifest = _files("one")
    store.put_files(files, manifest)
    store.put_files(files, manifest)  # blobs that exist are skipped
    deployment = store.record_deployment(
        "acme", store.next_version("acme"), manifest, ["Notifier"], {"owner": "x"}, "process"
    )
    assert deployment.version == 1 and deployment.digest == manifest_digest(manifest)
    assert deployment.files == ["notifier_agent.py", "pkg/helpers.py"]
    assert (deployment.metadata, deployment.placement) == ({"owner": "x"}, "process")
    assert store.current_deployments() == {"acme": deployment}
    assert store.manifest("acme", version=1) == manifest

    folder = store.bundle_dir(deployment.digest, manifest)
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.py")} == files
    assert store.bundle_dir(deployment.digest, manifest) == folder

    store.close()
    reopened = Store(store.data_dir)
    reopened.open()
    try:
        assert reopened.current_deployments() == {"acme": deployment}
    finally:
        reopened.close()


def test_version_numbers_are_never_reused(store: Store) -> None:
    assert store.next_version("acme") == 1
    _deploy(store, "acme", "one")
    _deploy(store, "acme", "two")
    assert store.next_version("acme") == 3
    # A deploy that fails stores its files but commits no row: no committed number moves.
    files, manifest = _files("failed")
    store.put_files(files, manifest)
    assert store.next_version("acme") == 3
    assert store.current_deployments()["acme"].version == 2
    # Removing the tenant does not start it over at 1, nor does reopening the folder.
    store.remove_tenant("acme")
    assert store.current_deployments() == {}
    assert store.next_version("acme") == 3
    store.close()
    store.open()
    assert store.next_version("acme") == 3
    assert store.next_version("other") == 1


def test_versions_past_keep_versions_are_pruned(store: Store) -> None:
    for word in ("one", "two", "three"):
        _deploy(store, "acme", word)
    assert store.current_deployments()["acme"].version == 3
    assert store.manifest("acme", version=2) == _files("two")[1]
    with pytest.raises(KeyError):
        store.manifest("acme", version=1)


def test_snapshots_are_created_listed_and_deleted(store: Store) -> None:
    first = _deploy(store, "acme", "one")
    snapshot = store.create_snapshot(first, "jan")
    assert (snapshot.tenant, snapshot.name, snapshot.version) == ("acme", "jan", 1)
    assert snapshot.digest == first.digest
    with pytest.raises(DuplicateSnapshotError):
        store.create_snapshot(first, "jan")
    _deploy(store, "acme", "two")
    _deploy(store, "acme", "three")  # version 1 is pruned; the snapshot keeps its manifest
    assert store.snapshots() == {("acme", "jan"): snapshot}
    assert store.manifest("acme", snapshot="jan") == _files("one")[1]
    assert store.delete_snapshot("acme", "jan") is True
    assert store.delete_snapshot("acme", "jan") is False
    assert store.snapshots() == {}
    with pytest.raises(KeyError):
        store.manifest("acme", snapshot="jan")


def test_removing_a_tenant_removes_its_snapshots_and_token(store: Store) -> None:
    deployment = _deploy(store, "acme", "one")
    store.create_snapshot(deployment, "jan")
    store.set_token_hash("acme", "h-acme", replace=False)
    _deploy(store, "other", "two")
    store.remove_tenant("acme")
    assert list(store.current_deployments()) == ["other"]
    assert store.snapshots() == {}
    assert store.token_hashes() == {}


def test_token_hashes_are_set_kept_and_replaced(store: Store) -> None:
    _deploy(store, "acme", "one")
    _deploy(store, "beta", "two")
    assert store.set_token_hash("acme", "h1", replace=False) is True
    assert store.set_token_hash("acme", "h2", replace=False) is False
    assert store.token_hashes() == {"h1": "acme"}
    assert store.set_token_hash("acme", "h3", replace=True) is True
    assert store.set_token_hash("beta", "h4", replace=False) is True
    assert store.token_hashes() == {"h3": "acme", "h4": "beta"}


def test_mods_are_saved_replaced_listed_in_load_order_and_deleted(store: Store) -> None:
    cache = StoredMod("shared_cache", "shared_cache", "plughost.mods.shared_cache", None, {}, 2.0)
    wiki = StoredMod("robot1/wiki", "wiki", "wiki", "robot1", {"lang": "en"}, 1.0)
    store.save_mod(cache)
    store.save_mod(wiki)
    assert store.mods() == [wiki, cache]
    moved = StoredMod("robot1/wiki", "wiki", "wiki", "robot1", {"lang": "fr"}, 3.0)
    store.save_mod(moved)
    assert store.mods() == [cache, moved]
    store.close()
    store.open()
    assert store.mods() == [cache, moved]
    store.delete_mod("shared_cache")
    store.delete_mod("not-there")
    assert store.mods() == [moved]


def _blob_names(store: Store) -> set[str]:
    return {path.name for path in (store.data_dir / "blobs").glob("*/*")}


def _bundle_names(store: Store) -> set[str]:
    return {path.name for path in (store.data_dir / "bundles").iterdir()}


def test_garbage_collection_keeps_what_is_referenced_and_removes_the_rest(store: Store) -> None:
    kept = _deploy(store, "acme", "kept")
    kept_manifest = _files("kept")[1]
    store.bundle_dir(kept.digest, kept_manifest)
    snap_source = _deploy(store, "snap", "snapped")
    store.create_snapshot(snap_source, "jan")
    _deploy(store, "snap", "later")
    _deploy(store, "snap", "latest")  # the snapped version is pruned, its snapshot stays
    # Files of deploys that never committed: one unreferenced, one still running.
    orphan_files, orphan = _files("orphan")
    store.put_files(orphan_files, orphan)
    store.bundle_dir(manifest_digest(orphan), orphan)
    staged_files, staged = _files("staged")
    store.put_files(staged_files, staged)
    store.bundle_dir(manifest_digest(staged), staged)

    report = store.collect_garbage(
        in_use=[manifest_digest(staged)], in_use_blobs=list(staged.values())
    )

    assert (report.blobs, report.bundles) == (1, 1)  # the orphan's own file and folder
    assert orphan["notifier_agent.py"] not in _blob_names(store)
    assert manifest_digest(orphan) not in _bundle_names(store)
    assert _blob_names(store) >= set(kept_manifest.values()) | set(staged.values())
    assert _blob_names(store) >= set(_files("snapped")[1].values())
    assert {kept.digest, manifest_digest(staged)} <= _bundle_names(store)
    assert store.check() == []
    # What is referenced still rebuilds; a second pass finds nothing more.
    assert store.collect_garbage(
        in_use=[manifest_digest(staged)], in_use_blobs=list(staged.values())
    ) == GarbageReport(0, 0)
    folder = store.bundle_dir(kept.digest, kept_manifest)
    assert (folder / "notifier_agent.py").read_bytes() == b"WORD = 'kept'\n"
    # Once the staged deploy is gone, its files go too.
    report = store.collect_garbage()
    assert (report.blobs, report.bundles) == (1, 1)


def test_check_reports_a_corrupted_and_a_missing_blob(store: Store) -> None:
    _deploy(store, "acme", "one")
    assert store.check() == []
    manifest = _files("one")[1]
    agent_blob = manifest["notifier_agent.py"]
    helpers_blob = manifest["pkg/helpers.py"]
    blobs = store.data_dir / "blobs"
    (blobs / agent_blob[:2] / agent_blob).write_bytes(b"WORD = 'tampered'\n")
    problems = store.check()
    assert len(problems) == 1
    assert "acme/1" in problems[0] and "notifier_agent.py" in problems[0]
    assert agent_blob[:12] in problems[0]
    (blobs / helpers_blob[:2] / helpers_blob).unlink()
    problems = store.check()
    assert len(problems) == 2 and any("pkg/helpers.py" in p for p in problems)
