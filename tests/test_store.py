"""The data folder on its own: real files under tmp_path, real SQLite, no network."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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


def _writable(path: Path) -> None:
    """Undo the read-only modes, as a tenant that owns the files could (root needs not)."""
    for folder, _, names in os.walk(path):
        os.chmod(folder, 0o755)
        for name in names:
            os.chmod(os.path.join(folder, name), 0o644)


def test_bundle_folders_are_read_only_by_mode(store: Store) -> None:
    deployment = _deploy(store, "acme", "one")
    folder = store.bundle_dir(deployment.digest, _files("one")[1])
    modes = {
        path.relative_to(folder).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in [folder, *folder.rglob("*")]
    }
    assert modes == {".": 0o555, "pkg": 0o555, "notifier_agent.py": 0o444, "pkg/helpers.py": 0o444}
    # Read-only folders are still collected, and rebuilt from the blobs when needed again.
    store.remove_tenant("acme")
    assert store.collect_garbage() == GarbageReport(2, 1)
    assert not folder.exists()


def test_a_changed_bundle_folder_is_reported_then_rebuilt_at_its_next_use(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    deployment = _deploy(store, "acme", "one")
    store.create_snapshot(deployment, "jan")
    manifest = _files("one")[1]
    folder = store.bundle_dir(deployment.digest, manifest)
    _writable(folder)
    (folder / "notifier_agent.py").write_bytes(b"WORD = 'rewritten'\n")
    (folder / "pkg" / "helpers.py").unlink()
    (folder / "pkg" / "added.py").write_bytes(b"ADDED = True\n")
    (folder / "pkg" / "__init__.py").symlink_to(folder / "notifier_agent.py")

    problems = store.check()

    prefix = f"bundle folder {deployment.digest[:12]}: "
    expected = [
        "notifier_agent.py differs from the stored content",
        "pkg/__init__.py is not part of the bundle",
        "pkg/added.py is not part of the bundle",
        "pkg/helpers.py is missing",
    ]
    assert problems == [f"deployment acme/1: {prefix}{line}" for line in expected] + [
        f"snapshot acme/jan: {prefix}{line}" for line in expected
    ]
    with caplog.at_level(logging.WARNING, logger="plughost.store"):
        assert store.bundle_dir(deployment.digest, manifest) == folder
    assert "pkg/helpers.py is missing" in caplog.text
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.py")}
    assert files == _files("one")[0]
    assert store.check() == []
    assert [p.name for p in folder.parent.iterdir()] == [deployment.digest]  # nothing left aside


def test_loads_that_meet_a_changed_folder_at_once_all_get_the_stored_files(store: Store) -> None:
    deployment = _deploy(store, "acme", "one")
    files, manifest = _files("one")
    folder = store.bundle_dir(deployment.digest, manifest)
    for round_number in range(20):
        _writable(folder)
        (folder / "notifier_agent.py").write_bytes(f"WORD = {round_number}\n".encode())
        start = threading.Barrier(8)

        def load(start: threading.Barrier) -> dict[str, bytes]:
            start.wait()
            found = store.bundle_dir(deployment.digest, manifest)
            return {p.relative_to(found).as_posix(): p.read_bytes() for p in found.rglob("*.py")}

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(load, [start] * 8)) == [files] * 8
    assert store.check() == []
    assert [p.name for p in folder.parent.iterdir()] == [deployment.digest]


def test_a_file_replaced_by_a_link_to_the_same_content_is_reported(
    store: Store, tmp_path: Path
) -> None:
    deployment = _deploy(store, "acme", "one")
    folder = store.bundle_dir(deployment.digest, _files("one")[1])
    _writable(folder)
    copy = tmp_path / "elsewhere.py"
    copy.write_bytes((folder / "notifier_agent.py").read_bytes())
    (folder / "notifier_agent.py").unlink()
    (folder / "notifier_agent.py").symlink_to(copy)
    assert store.check() == [
        f"deployment acme/1: bundle folder {deployment.digest[:12]}: "
        "notifier_agent.py differs from the stored content"
    ]


def test_open_removes_the_temporaries_a_killed_process_left(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Store(data)
    first.open()
    with first.temporary_folder("upload") as live:
        assert Path(live).parent == data / "tmp" and Path(live).name.startswith("plughost-upload-")
    # What a kill -9 leaves: no cleanup ran, the folder lock just went with the process.
    upload = data / "tmp" / "plughost-upload-killed"
    upload.mkdir()
    (upload / "bundle").write_bytes(b"PK half an upload")
    extract = data / "tmp" / "plughost-extract-killed" / "pkg"
    extract.mkdir(parents=True)
    (extract / "mod.py").write_bytes(b"X = 1\n")
    staging = data / "bundles" / ".tmp-interrupted"
    (staging / "pkg").mkdir(parents=True)
    (staging / "pkg" / "mod.py").write_bytes(b"X = 1\n")
    os.chmod(staging / "pkg" / "mod.py", 0o444)
    os.chmod(staging / "pkg", 0o555)
    os.chmod(staging, 0o555)
    first.close()

    again = Store(data)
    again.open()
    assert list((data / "tmp").iterdir()) == []
    assert list((data / "bundles").iterdir()) == []
    again.close()


def test_a_data_folder_from_before_instance_config_opens_and_keeps_its_deployments(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "data")
    store.open()
    kept = _deploy(store, "old", "one")
    store.close()
    # As a data folder of the version before per-instance config was stored.
    db = sqlite3.connect(tmp_path / "data" / "plughost.db")
    db.execute("ALTER TABLE deployments DROP COLUMN instance_config")
    db.commit()
    db.close()
    store = Store(tmp_path / "data")
    store.open()
    try:
        assert store.current_deployments()["old"].digest == kept.digest
        assert store.current_deployments()["old"].instance_config == {}
        files, manifest = _files("two")
        store.put_files(files, manifest)
        configs = {"camera": {"fps": 60}}
        store.record_deployment("old", 2, manifest, [], {}, "inprocess", configs)
        assert store.current_deployments()["old"].instance_config == configs
    finally:
        store.close()
