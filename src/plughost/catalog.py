"""What is live, and where its files are: tenants' deployments and snapshots.

The catalog is the network's in-memory index over the store: the live
deployment of each tenant, its namespace, and every snapshot. It changes
only when a deploy, snapshot or removal commits; everything else reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UnknownSnapshotError, UnknownTenantError
from .manifest import Manifest, read_manifest
from .naming import Namespace
from .store import Deployment, Snapshot, Store


class GoneError(Exception):
    """What a call resolved to was removed before its files could be found."""


@dataclass(frozen=True)
class Location:
    """Where one namespace's code is: its bundle folder and its manifest."""

    namespace: Namespace
    tenant: str
    version: int
    digest: str
    snapshot: str | None
    folder: Path
    manifest: Manifest


def snapshot_namespace(snapshot: Snapshot) -> Namespace:
    """The namespace a snapshot runs in."""
    # The digest keeps a re-created snapshot of the same name apart from the one it replaces.
    return Namespace(snapshot.tenant, snapshot=snapshot.name, digest=snapshot.digest[:16])


class Catalog:
    """The live deployments and snapshots of one network, over its store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._live: dict[str, Deployment] = {}
        self._live_ns: dict[str, Namespace] = {}
        self._snapshots: dict[tuple[str, str], Snapshot] = {}

    def load(self) -> None:
        """Read what the store holds (at start)."""
        self._live = self._store.current_deployments()
        self._live_ns = {t: Namespace(t, version=d.version) for t, d in self._live.items()}
        self._snapshots = self._store.snapshots()

    # -- reading ------------------------------------------------------------------------

    def tenants(self) -> list[str]:
        """The tenants that have a deployment, sorted."""
        return sorted(self._live)

    def __contains__(self, tenant: object) -> bool:
        return tenant in self._live

    def __len__(self) -> int:
        return len(self._live)

    def deployment(self, tenant: str) -> Deployment:
        """The tenant's live deployment.

        Raises:
            UnknownTenantError: no such tenant.
        """
        deployment = self._live.get(tenant)
        if deployment is None:
            raise UnknownTenantError(tenant, self.tenants())
        return deployment

    def find(self, tenant: str) -> Deployment | None:
        """The tenant's live deployment, or ``None``."""
        return self._live.get(tenant)

    def live_namespace(self, tenant: str) -> Namespace:
        """The namespace of the tenant's live deployment.

        Raises:
            UnknownTenantError: no such tenant.
        """
        namespace = self._live_ns.get(tenant)
        if namespace is None:
            raise UnknownTenantError(tenant, self.tenants())
        return namespace

    def snapshot(self, tenant: str, name: str) -> Snapshot:
        """One snapshot of a tenant.

        Raises:
            UnknownTenantError, UnknownSnapshotError: no such tenant or snapshot.
        """
        self.deployment(tenant)
        snapshot = self._snapshots.get((tenant, name))
        if snapshot is None:
            known = [s.name for s in self.snapshots(tenant)]
            raise UnknownSnapshotError(tenant, name, known)
        return snapshot

    def has_snapshot(self, tenant: str, name: str) -> bool:
        return (tenant, name) in self._snapshots

    def snapshots(self, tenant: str) -> list[Snapshot]:
        """The tenant's snapshots, oldest first."""
        found = [s for (t, _), s in self._snapshots.items() if t == tenant]
        return sorted(found, key=lambda s: (s.created_at, s.name))

    def target(self, tenant: str, snapshot: str | None) -> tuple[Namespace, str, int]:
        """What a call names: its namespace, bundle digest and deployment version.

        Raises:
            UnknownTenantError, UnknownSnapshotError: no such tenant or snapshot.
        """
        if snapshot is None:
            deployment = self.deployment(tenant)
            return self._live_ns[tenant], deployment.digest, deployment.version
        found = self.snapshot(tenant, snapshot)
        return snapshot_namespace(found), found.digest, found.version

    def locate(
        self,
        tenant: str,
        namespace: Namespace,
        digest: str,
        version: int,
        snapshot: str | None = None,
    ) -> Location:
        """Find a namespace's bundle folder and manifest; blocking, for a thread.

        Raises:
            GoneError: the deployment or snapshot was removed meanwhile.
        """
        try:
            manifest = self._store.manifest(tenant, version=version, snapshot=snapshot)
            folder = self._store.bundle_dir(digest, manifest)
        except (KeyError, FileNotFoundError) as exc:
            raise GoneError(namespace) from exc
        return Location(namespace, tenant, version, digest, snapshot, folder, read_manifest(folder))

    def stage(
        self, namespace: Namespace, version: int, digest: str, files: Mapping[str, str]
    ) -> Location:
        """Where a deployment not committed yet will run, its folder built from ``files``
        (relative path -> blob); blocking, for a thread."""
        folder = self._store.bundle_dir(digest, files)
        tenant = namespace.tenant
        return Location(namespace, tenant, version, digest, None, folder, read_manifest(folder))

    def locate_live(self, tenant: str) -> Location:
        """Find the tenant's live bundle; blocking, for a thread.

        Raises:
            UnknownTenantError: no such tenant.
            GoneError: it was replaced or removed meanwhile.
        """
        deployment = self.deployment(tenant)
        namespace = self._live_ns[tenant]
        return self.locate(tenant, namespace, deployment.digest, deployment.version)

    # -- changing (when a write commits) ------------------------------------------------

    def set_live(self, deployment: Deployment, namespace: Namespace) -> Namespace | None:
        """Make ``deployment`` the tenant's live one, run in ``namespace``; return the
        namespace it replaces.

        ``namespace`` is the very object its unit started with: a call's lookups by it
        then find the unit by identity, without ``Namespace.__eq__``.
        """
        if namespace != Namespace(deployment.tenant, version=deployment.version):
            raise ValueError(f"{namespace!r} is not the namespace of {deployment!r}")
        replaced = self._live_ns.get(deployment.tenant)
        self._live[deployment.tenant] = deployment
        self._live_ns[deployment.tenant] = namespace
        return replaced

    def add_snapshot(self, snapshot: Snapshot) -> None:
        self._snapshots[(snapshot.tenant, snapshot.name)] = snapshot

    def drop_snapshot(self, tenant: str, name: str) -> Namespace:
        """Forget one snapshot; return the namespace it ran in."""
        return snapshot_namespace(self._snapshots.pop((tenant, name)))

    def drop_tenant(self, tenant: str) -> list[Namespace]:
        """Forget a tenant; return the namespaces it ran in (live and snapshots)."""
        del self._live[tenant]
        gone = [self._live_ns.pop(tenant)]
        for key in [key for key in self._snapshots if key[0] == tenant]:
            gone.append(snapshot_namespace(self._snapshots.pop(key)))
        return gone
