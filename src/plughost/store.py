"""Durable state in the data folder: SQLite metadata and content-addressed files.

Layout of a data folder::

    plughost.db            tenants, deployments (with file manifests), snapshots
    blobs/ab/abcdef...     each file content once, named by its sha256
    bundles/<digest>/      a bundle's files laid out for import, one per bundle digest
    tenants/<tenant>/      what mods keep for one tenant; removed with the tenant
    tenants/<tenant>/state the tenant's own state (plughost.state); removed with it
    tmp/                   uploads and archives being read (``plughost-upload-*``, ...)
    code/ab/abcdef...      compiled bundle code by source digest (plughost._codecache)
    lock                   held (flock) by the one process that has the folder open
    admin_token.sha256     the admin token's hash (plughost.api.admin_token); never the token

A deploy writes its blobs first (each fsynced, then renamed into place) and
commits one SQLite transaction last, so a crash at any moment leaves either
the old deployment or the new one, never a partial one. Bundle folders are
built in a temporary folder and renamed, so one is complete or absent; they
can always be rebuilt from the blobs.

The blobs are the truth; a bundle folder is a copy that code loads from, and
a copy can be changed by whoever can write to it (a tenant's own code, run as
the host's user). So a bundle folder is made read-only (files 0o444, folders
0o555: a defence where the server does not run as root, which mode bits do
not stop), and it is verified against the manifest each time it is handed
out to load from, and rebuilt from the blobs when it differs. :meth:`Store.check`
reports such a folder without touching it.

Temporary files live in the data folder, so a crash cannot leave them
anywhere else: blob and bundle-folder temporaries (``.tmp-*``) beside their
targets, because they are renamed into place; uploads and archives being
read under ``tmp/``. :meth:`Store.open` removes what a killed process left of
both, once it holds the lock, so no live server's temporaries are touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bundle import folder_differences, manifest_digest
from .errors import DataFolderInUseError, DuplicateSnapshotError
from .folders import remove_tree

log = logging.getLogger(__name__)

_READ_ONLY_FILE = 0o444
_READ_ONLY_FOLDER = 0o555

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    manifest TEXT NOT NULL,
    agents TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at REAL NOT NULL,
    placement TEXT NOT NULL DEFAULT 'inprocess',
    instance_config TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant, version)
);
CREATE TABLE IF NOT EXISTS tokens (
    tenant TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS mods (
    key TEXT PRIMARY KEY,
    mod_id TEXT NOT NULL,
    mod_path TEXT NOT NULL,
    tenant TEXT,
    config TEXT NOT NULL,
    loaded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    tenant TEXT PRIMARY KEY,
    last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    manifest TEXT NOT NULL,
    agents TEXT NOT NULL,
    created_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS seals (
    tenant TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
    sealed_at REAL NOT NULL,
    sealed_by TEXT NOT NULL,
    trigger TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    actor TEXT NOT NULL DEFAULT ''
);
"""
_SCHEMA_VERSION = 3
# Columns later versions added, for data folders made before: (table, column, definition).
_ADDED_COLUMNS = (
    ("deployments", "instance_config", "TEXT NOT NULL DEFAULT '{}'"),
    ("snapshots", "state", "TEXT NOT NULL DEFAULT '{}'"),
)
# The tables whose rows hold a manifest of tenant state (relative path -> blob sha256).
_STATE_TABLES = ("snapshots", "seals")


@dataclass(frozen=True)
class Deployment:
    """A tenant's bundle at one version.

    ``files`` are the bundle's relative paths; ``agents`` the names of the
    agents it defines; ``metadata`` the extra keys of a JSON bundle;
    ``instance_config`` the config given at deploy for its declared instances,
    by name, laid over what its ``plughost.toml`` says.
    """

    tenant: str
    version: int
    digest: str
    files: list[str]
    agents: list[str]
    created_at: float
    metadata: dict[str, Any] = field(default_factory=dict)
    placement: str = "inprocess"
    instance_config: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """A named, immutable copy of a tenant's bundle, taken from deployment ``version``,
    with its state at that moment: ``state`` maps each file's path in the state folder
    to the sha256 of its content."""

    tenant: str
    name: str
    digest: str
    version: int
    agents: list[str]
    created_at: float
    state: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Sealing:
    """A tenant's seal: who sealed it, when and why, at which version, and its state then
    (path -> sha256), which every call of the sealed tenant reads."""

    tenant: str
    sealed_at: float
    sealed_by: str
    trigger: str
    version: int
    state: dict[str, str] = field(default_factory=dict, repr=False)
    actor: str = ""
    """Who sealed it as the caller said (``sealed_by`` is who the caller's token is)."""


@dataclass(frozen=True)
class StoredMod:
    """A mod that was loaded and should be loaded again at start."""

    key: str
    mod_id: str
    mod_path: str
    tenant: str | None
    config: dict[str, Any]
    loaded_at: float


@dataclass(frozen=True)
class GarbageReport:
    """What a garbage pass removed."""

    blobs: int
    bundles: int


class Store:
    """The data folder of one network. Thread-safe; one process at a time.

    Args:
        data_dir: the folder; created if missing.
        keep_versions: how many past deployments of a tenant to keep
            (their files stay until then); the live one always stays.

    Raises:
        DataFolderInUseError: on :meth:`open`, if another process holds the folder.
    """

    def __init__(self, data_dir: Path, *, keep_versions: int = 5) -> None:
        self.data_dir = data_dir
        self.keep_versions = max(1, keep_versions)
        self._blobs = data_dir / "blobs"
        self._bundles = data_dir / "bundles"
        self.scratch = data_dir / "tmp"
        """Where uploads and archives are read; emptied by :meth:`open`."""
        self.compiled = data_dir / "code"
        """Where compiled bundle code is kept, named by the source's digest; may be removed."""
        self._lock = threading.RLock()
        # Two loads of one changed folder must not both rebuild it: the second
        # would move aside the folder the first just put in place.
        self._rebuilding = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._lock_file: int | None = None

    # -- lifecycle -----------------------------------------------------------------

    def open(self) -> None:
        """Create the folder if needed, take its lock, open the database, and remove
        the temporary files a killed process left."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._blobs.mkdir(exist_ok=True)
        self._bundles.mkdir(exist_ok=True)
        self.scratch.mkdir(exist_ok=True)
        descriptor = os.open(self.data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise DataFolderInUseError(self.data_dir) from None
        self._lock_file = descriptor
        db = sqlite3.connect(self.data_dir / "plughost.db", check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(_SCHEMA)
        for table, column, definition in _ADDED_COLUMNS:
            present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        self._db = db
        self._remove_temporaries()
        self._remove_orphan_tenant_data()

    def close(self) -> None:
        """Close the database and release the folder."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._lock_file is not None:
                os.close(self._lock_file)
                self._lock_file = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise RuntimeError("the store is not open")
            with self._db:
                yield self._db

    def _query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._db is None:
                raise RuntimeError("the store is not open")
            return self._db.execute(sql, args).fetchall()

    # -- files ---------------------------------------------------------------------

    def _blob_path(self, sha256: str) -> Path:
        return self._blobs / sha256[:2] / sha256

    def put_files(self, files: Mapping[str, bytes], manifest: Mapping[str, str]) -> None:
        """Store each file's content as a blob (fsynced), skipping blobs that exist."""
        for relative, sha256 in manifest.items():
            path = self._blob_path(sha256)
            if not path.exists():
                write_durably(path, files[relative])

    def put_blob(self, data: bytes) -> str:
        """Store ``data`` as a blob (fsynced) unless it exists; return its sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self._blob_path(sha256)
        if not path.exists():
            write_durably(path, data)
        return sha256

    def lay_out(self, target: Path, manifest: Mapping[str, str]) -> None:
        """Copy the blobs of ``manifest`` to their paths under ``target`` (a new folder).

        Raises:
            FileNotFoundError: a blob of the manifest is missing.
        """
        for relative, sha256 in manifest.items():
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self._blob_path(sha256), destination)

    def temporary_folder(self, purpose: str) -> tempfile.TemporaryDirectory[str]:
        """A new folder ``tmp/plughost-<purpose>-*``, removed on cleanup or at the next open."""
        return tempfile.TemporaryDirectory(prefix=f"plughost-{purpose}-", dir=self.scratch)

    def bundle_dir(self, digest: str, manifest: Mapping[str, str]) -> Path:
        """Return the folder holding bundle ``digest``, as ``manifest`` says it is.

        A missing folder is built from the blobs. One whose files differ from
        the manifest (a file changed, added or removed since it was built) is
        rebuilt, with a warning naming the files. Verifying reads each file
        once, as the load that follows does anyway.

        Raises:
            FileNotFoundError: a blob of the manifest is missing.
        """
        target = self._bundles / digest
        if not target.is_dir():
            self._place(self._stage(manifest), target)
        elif folder_differences(target, manifest):
            with self._rebuilding:
                differences = folder_differences(target, manifest)
                if differences:
                    log.warning(
                        "bundle folder %s differs from its stored files, rebuilding it: %s",
                        digest[:12],
                        "; ".join(differences),
                    )
                    self._rebuild(target, manifest)
        return target

    def _stage(self, manifest: Mapping[str, str]) -> Path:
        """Build a read-only bundle folder from the blobs, under a temporary name."""
        staging = self._bundles / f".tmp-{uuid.uuid4().hex}"
        try:
            for relative, sha256 in manifest.items():
                destination = staging / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self._blob_path(sha256), destination)
            _make_read_only(staging)
        except BaseException:
            remove_folder(staging)
            raise
        return staging

    def _place(self, staging: Path, target: Path) -> None:
        try:
            staging.rename(target)
        except OSError:
            # Another load built the same folder first; it holds the same files.
            if not target.is_dir():
                raise
        finally:
            remove_folder(staging)

    def _rebuild(self, target: Path, manifest: Mapping[str, str]) -> None:
        # A folder cannot be renamed over a full one: the changed one is moved
        # aside first, so the name is absent between the two renames, never partial.
        staging = self._stage(manifest)
        stale = self._bundles / f".tmp-{uuid.uuid4().hex}"
        try:
            with contextlib.suppress(FileNotFoundError):  # gone meanwhile: nothing to set aside
                target.rename(stale)
        except BaseException:
            remove_folder(staging)
            raise
        try:
            self._place(staging, target)
        finally:
            remove_folder(stale)

    # -- deployments ---------------------------------------------------------------

    def next_version(self, tenant: str) -> int:
        """The version the tenant's next deployment gets; never reused, even after a removal."""
        rows = self._query("SELECT last FROM versions WHERE tenant = ?", tenant)
        return int(rows[0][0]) + 1 if rows else 1

    def record_deployment(
        self,
        tenant: str,
        version: int,
        manifest: Mapping[str, str],
        agents: list[str],
        metadata: Mapping[str, Any],
        placement: str = "inprocess",
        instance_config: Mapping[str, dict[str, Any]] | None = None,
    ) -> Deployment:
        """Commit a deployment whose blobs are stored; prune versions past ``keep_versions``."""
        now = time.time()
        digest = manifest_digest(manifest)
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO tenants (name, created_at) VALUES (?, ?)", (tenant, now)
            )
            db.execute("INSERT OR REPLACE INTO versions VALUES (?, ?)", (tenant, version))
            configs = dict(instance_config or {})
            db.execute(
                "INSERT INTO deployments (tenant, version, digest, manifest, agents, metadata,"
                " created_at, placement, instance_config) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tenant,
                    version,
                    digest,
                    json.dumps(dict(sorted(manifest.items()))),
                    json.dumps(agents),
                    json.dumps(dict(metadata)),
                    now,
                    placement,
                    json.dumps(configs),
                ),
            )
            db.execute(
                "DELETE FROM deployments WHERE tenant = ? AND version <= ?",
                (tenant, version - self.keep_versions),
            )
        return Deployment(
            tenant,
            version,
            digest,
            sorted(manifest),
            agents,
            now,
            dict(metadata),
            placement,
            configs,
        )

    def current_deployments(self) -> dict[str, Deployment]:
        """Return each tenant's live (newest) deployment."""
        rows = self._query(
            "SELECT tenant, version, digest, manifest, agents, created_at, metadata, placement,"
            " instance_config FROM deployments d WHERE version ="
            " (SELECT MAX(version) FROM deployments WHERE tenant = d.tenant)"
        )
        return {
            row[0]: Deployment(
                row[0],
                row[1],
                row[2],
                sorted(json.loads(row[3])),
                json.loads(row[4]),
                row[5],
                json.loads(row[6]),
                row[7],
                json.loads(row[8]),
            )
            for row in rows
        }

    def manifest(
        self, tenant: str, *, version: int | None = None, snapshot: str | None = None
    ) -> dict[str, str]:
        """Return the manifest of a deployment version or of a snapshot.

        Raises:
            KeyError: there is no such deployment or snapshot.
        """
        if snapshot is not None:
            rows = self._query(
                "SELECT manifest FROM snapshots WHERE tenant = ? AND name = ?", tenant, snapshot
            )
        else:
            rows = self._query(
                "SELECT manifest FROM deployments WHERE tenant = ? AND version = ?", tenant, version
            )
        if not rows:
            raise KeyError((tenant, version, snapshot))
        manifest: dict[str, str] = json.loads(rows[0][0])
        return manifest

    def remove_tenant(self, tenant: str) -> None:
        """Delete a tenant with its deployments and snapshots (blobs go at the next GC)."""
        with self._transaction() as db:
            db.execute("DELETE FROM tenants WHERE name = ?", (tenant,))

    def remove_tenant_data(self, tenant: str) -> None:
        """Delete what mods kept for ``tenant``; call it once its mods are shut down."""
        remove_folder(tenant_data_dir(self.data_dir, tenant))  # read-only folders too

    def remove_data_of_removed(self, tenant: str) -> None:
        """Delete what mods kept for ``tenant`` if it was a tenant once and is one no more:
        what a write that outlived its removal left. Names that never were tenants keep
        theirs."""
        removed = self._query(
            "SELECT 1 FROM versions WHERE tenant = ? AND tenant NOT IN (SELECT name FROM tenants)",
            tenant,
        )
        if removed:
            self.remove_tenant_data(tenant)

    # -- snapshots -----------------------------------------------------------------

    def create_snapshot(
        self, deployment: Deployment, name: str, state: Mapping[str, str] | None = None
    ) -> Snapshot:
        """Record a snapshot of ``deployment`` named ``name``, with the tenant's ``state``
        (path -> sha256 of blobs stored already).

        Raises:
            DuplicateSnapshotError: the tenant has a snapshot by that name.
        """
        manifest = self.manifest(deployment.tenant, version=deployment.version)
        now = time.time()
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        deployment.tenant,
                        name,
                        deployment.version,
                        deployment.digest,
                        json.dumps(manifest),
                        json.dumps(deployment.agents),
                        now,
                        json.dumps(dict(state or {})),
                    ),
                )
        except sqlite3.IntegrityError:
            raise DuplicateSnapshotError(deployment.tenant, name) from None
        return Snapshot(
            deployment.tenant,
            name,
            deployment.digest,
            deployment.version,
            deployment.agents,
            now,
            dict(state or {}),
        )

    def snapshots(self) -> dict[tuple[str, str], Snapshot]:
        """Return every snapshot, keyed by ``(tenant, name)``."""
        rows = self._query(
            "SELECT tenant, name, digest, version, agents, created_at, state FROM snapshots"
        )
        return {
            (row[0], row[1]): Snapshot(
                row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], json.loads(row[6])
            )
            for row in rows
        }

    def delete_snapshot(self, tenant: str, name: str) -> bool:
        """Delete a snapshot; return whether it existed."""
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM snapshots WHERE tenant = ? AND name = ?", (tenant, name)
            )
            return cursor.rowcount > 0

    # -- seals -----------------------------------------------------------------------

    def record_seal(self, sealing: Sealing) -> None:
        """Record that a tenant is sealed (its blobs of state are stored already)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO seals VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    sealing.tenant,
                    sealing.sealed_at,
                    sealing.sealed_by,
                    sealing.trigger,
                    sealing.version,
                    json.dumps(sealing.state),
                    sealing.actor,
                ),
            )

    def delete_seal(self, tenant: str) -> None:
        """Forget a tenant's seal."""
        with self._transaction() as db:
            db.execute("DELETE FROM seals WHERE tenant = ?", (tenant,))

    def seals(self) -> dict[str, Sealing]:
        """Every sealed tenant's seal, by tenant."""
        rows = self._query(
            "SELECT tenant, sealed_at, sealed_by, trigger, version, state, actor FROM seals"
        )
        return {
            row[0]: Sealing(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6])
            for row in rows
        }

    # -- tokens ----------------------------------------------------------------------

    def set_token_hash(self, tenant: str, token_hash: str, *, replace: bool) -> bool:
        """Record the hash of a tenant's token; return False if one exists and not ``replace``."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._transaction() as db:
            cursor = db.execute(
                f"{verb} INTO tokens VALUES (?, ?, ?)", (tenant, token_hash, time.time())
            )
            return cursor.rowcount > 0

    def token_hashes(self) -> dict[str, str]:
        """Every tenant token hash, mapped to its tenant."""
        return dict(self._query("SELECT token_hash, tenant FROM tokens"))

    # -- mods ------------------------------------------------------------------------

    def save_mod(self, mod: StoredMod) -> None:
        """Record a loaded mod so that a restart loads it again."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO mods VALUES (?, ?, ?, ?, ?, ?)",
                (
                    mod.key,
                    mod.mod_id,
                    mod.mod_path,
                    mod.tenant,
                    json.dumps(mod.config),
                    mod.loaded_at,
                ),
            )

    def delete_mod(self, key: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM mods WHERE key = ?", (key,))

    def mods(self) -> list[StoredMod]:
        """The recorded mods, in the order they were loaded."""
        rows = self._query(
            "SELECT key, mod_id, mod_path, tenant, config, loaded_at FROM mods ORDER BY loaded_at"
        )
        return [StoredMod(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    def bundle_file(self, digest: str, relative: str) -> bytes | None:
        """The file ``relative`` of the bundle ``digest``, from its blob if a deployment or
        snapshot has it, else from its bundle folder; ``None`` if neither holds it."""
        for table in ("deployments", "snapshots"):
            for (manifest,) in self._query(
                f"SELECT manifest FROM {table} WHERE digest = ? LIMIT 1", digest
            ):
                sha256 = json.loads(manifest).get(relative)
                if sha256 is None:
                    return None
                with contextlib.suppress(OSError):
                    return self._blob_path(sha256).read_bytes()
        with contextlib.suppress(OSError):
            return (self._bundles / digest / relative).read_bytes()
        return None

    def digests(self) -> set[str]:
        """The bundle digests every deployment and snapshot refers to."""
        return {
            digest
            for table in ("deployments", "snapshots")
            for (digest,) in self._query(f"SELECT DISTINCT digest FROM {table}")
        }

    # -- garbage -------------------------------------------------------------------

    def collect_garbage(
        self, in_use: Iterable[str] = (), in_use_blobs: Iterable[str] = ()
    ) -> GarbageReport:
        """Remove blobs and bundle folders that no deployment or snapshot references.

        ``in_use`` names bundle digests and ``in_use_blobs`` blobs that must
        stay although no row refers to them (yet): code still running, and
        deploys not yet committed.
        """
        referenced_blobs = set(in_use_blobs)
        referenced_bundles = set(in_use)
        for table in ("deployments", "snapshots"):
            for digest, manifest in self._query(f"SELECT digest, manifest FROM {table}"):
                referenced_bundles.add(digest)
                referenced_blobs.update(json.loads(manifest).values())
        for table in _STATE_TABLES:
            for (state,) in self._query(f"SELECT state FROM {table}"):
                referenced_blobs.update(json.loads(state).values())
        blobs = 0
        for path in self._blobs.glob("*/*"):
            # A .tmp- file is a blob being written; an interrupted one goes at the next open.
            if path.name not in referenced_blobs and not path.name.startswith(".tmp-"):
                path.unlink(missing_ok=True)
                blobs += 1
        # A deploy in progress may be about to write into an empty shard of one of its blobs.
        kept_shards = {blob[:2] for blob in referenced_blobs}
        for shard in self._blobs.iterdir():
            if shard.is_dir() and shard.name not in kept_shards and not any(shard.iterdir()):
                shard.rmdir()
        bundles = 0
        for path in self._bundles.iterdir():
            if path.name not in referenced_bundles and not path.name.startswith(".tmp-"):
                remove_folder(path)
                bundles += 1
        return GarbageReport(blobs, bundles)

    def check(self) -> list[str]:
        """Return every inconsistency found, each naming its deployment or snapshot and file.

        A blob of a manifest may be missing or corrupt; a bundle folder may
        differ from its manifest (a file changed, missing or added). An empty
        list means every deployment and snapshot loads the code it was given.
        Nothing is changed: a bundle folder that differs is rebuilt when it is
        next loaded.
        """
        problems: list[str] = []
        verified: dict[str, bool] = {}

        def intact(sha256: str) -> bool:
            if sha256 not in verified:
                path = self._blob_path(sha256)
                verified[sha256] = (
                    path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256
                )
            return verified[sha256]

        folders: dict[str, list[str]] = {}
        for table, key in (("deployments", "version"), ("snapshots", "name")):
            for tenant, which, digest, manifest_text in self._query(
                f"SELECT tenant, {key}, digest, manifest FROM {table}"
            ):
                owner = f"{table[:-1]} {tenant}/{which}"
                manifest: dict[str, str] = json.loads(manifest_text)
                for relative, sha256 in manifest.items():
                    if not intact(sha256):
                        problems.append(
                            f"{owner}: file {relative} (blob {sha256[:12]}) is missing or corrupt"
                        )
                if digest not in folders:
                    folder = self._bundles / digest
                    folders[digest] = (
                        folder_differences(folder, manifest) if folder.is_dir() else []
                    )
                problems += [
                    f"{owner}: bundle folder {digest[:12]}: {difference}"
                    for difference in folders[digest]
                ]
        for table, key in (("snapshots", "name"), ("seals", "version")):
            for tenant, which, state in self._query(f"SELECT tenant, {key}, state FROM {table}"):
                problems += [
                    f"{table[:-1]} {tenant}/{which}: state file {relative}"
                    f" (blob {sha256[:12]}) is missing or corrupt"
                    for relative, sha256 in json.loads(state).items()
                    if not intact(sha256)
                ]
        return problems

    def _remove_orphan_tenant_data(self) -> None:
        # A removal cut short after its commit left the data behind: a new tenant of the
        # same name must not find it.
        folder = self.data_dir / "tenants"
        if folder.is_dir():
            for path in folder.iterdir():
                self.remove_data_of_removed(path.name)

    def _remove_temporaries(self) -> None:
        for path in self._bundles.glob(".tmp-*"):
            remove_folder(path)
        for path in self._blobs.glob("*/.tmp-*"):
            path.unlink(missing_ok=True)
        for path in self.scratch.iterdir():
            if path.is_dir():
                remove_folder(path)
            else:
                path.unlink(missing_ok=True)


def _make_read_only(root: Path) -> None:
    """Make the files under ``root`` read-only for everyone, and its folders unwritable."""
    for folder, _, files in os.walk(root):
        for name in files:
            os.chmod(os.path.join(folder, name), _READ_ONLY_FILE)
        os.chmod(folder, _READ_ONLY_FOLDER)


def remove_folder(root: Path) -> None:
    """Remove ``root`` and everything in it, read-only folders included; absent is fine.

    A link is removed itself: what it leads to is never walked, made writable or removed.
    """
    # By descriptor, without recursion: tenant code may have written deep trees, and swap a
    # folder for a link while this runs (plughost.folders).
    remove_tree(root)


def tenant_data_dir(data_dir: Path, tenant: str) -> Path:
    """The folder under ``data_dir`` where mods keep data for ``tenant`` (a checked name)."""
    return data_dir / "tenants" / tenant


def folder_in_use(data_dir: Path) -> bool:
    """Whether a process has the data folder open now (holds its lock)."""
    try:
        descriptor = os.open(data_dir / "lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def write_durably(path: Path, data: bytes, *, mode: int = 0o666) -> None:
    """Write ``data`` to ``path`` so that it is complete and on disk before it is visible.

    ``mode`` (less the umask) applies from the file's creation on, so a file
    made for its owner only is never readable by others, not even for a moment.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".tmp-{uuid.uuid4().hex}"
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
