"""Tenant state on disk: each tenant's state folder, what one call sees of it, its captures.

Layout, in the tenant's data folder (``tenants/<tenant>/state``)::

    live/shared/          the tenant's own state: memory.json, values.json, any file
    live/users/<user>/    the state of one user of it, when a call names one
    views/<id>/           a copy of captured state that one read-only call reads

A call of a tenant's live code reads and writes ``live/``. A snapshot
captures ``live/`` as it is when the snapshot is taken: each file's content
becomes a blob of the store (stored once, however many snapshots hold it),
and the snapshot keeps the manifest (path -> sha256). Sealing captures it the
same way, and from then on the sealed tenant's calls read that capture.

A call of a snapshot, or of a sealed tenant, runs read-only: it gets a view
of its own, a copy of the capture laid out for it, made read-only on disk (a
sandbox sees it on a read-only mount). When the call ends the view is
compared with the capture, and then removed: a call that changed it fails
with :class:`~plughost.errors.ReadOnlyStateError`, and since the change was
made to its own copy, neither the capture nor another call ever saw it.

A capture waits for the tenant's writing calls in flight to end, and holds
new ones back while it reads, so it never holds half a write. Other tenants
are not held.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from .errors import AgentError, InvalidNameError, ReadOnlyStateError, StateTooLargeError
from .folders import (
    FOLDER,
    MAX_DEPTH,
    TooDeep,
    open_regular,
    read_regular,
    regular_sha256,
    walk,
)
from .naming import TENANT_NAME_RULE, check_tenant_name
from .storage import CallState
from .store import Sealing, Store, remove_folder, tenant_data_dir

SEALED = "sealed"  # a file beside live/: the tenant is sealed
LIVE = "live"
VIEWS = "views"
SHARED = "shared"
USERS = "users"
USER_NAME_RULE = TENANT_NAME_RULE

# What the key-value store writes beside its values while it changes them: not state.
_NOT_STATE = (".values.lock", ".values-")
# Errors a write to a read-only view meets, in a call that lets them through.
_WRITE_REFUSED = frozenset({"PermissionError", "OSError", "ReadOnlyStateError"})
_USERS_KEPT = 10_000  # users whose live folder a tenant's gate remembers making
MAX_STATE_FILES = 100_000
MAX_STATE_BYTES = 1 << 30
"""What one capture (a snapshot's, a seal's) may hold: past it, it is refused."""


def state_root(data_dir: Path, tenant: str) -> Path:
    """The folder of a tenant's state."""
    return tenant_data_dir(data_dir, tenant) / "state"


def user_folder(user: str | None) -> str:
    """The folder, under ``live/`` or a view, of a user's state (the shared one for none).

    Raises:
        InvalidNameError: ``user`` breaks the naming rule.
    """
    if user is None:
        return SHARED
    try:
        check_tenant_name(user)
    except ValueError:
        raise InvalidNameError("user", user, USER_NAME_RULE) from None
    return f"{USERS}/{user}"


def open_up(folder: Path) -> None:
    """Let every user read and write the live state under ``folder``: a tenant's sandboxes
    each run under a uid of their own, and only they are shown it.

    By descriptor, never following a link (see :mod:`plughost.folders`): a sandbox writes
    here, and may swap a folder or a file for a link to a host file while this runs.
    Folders deeper than ``MAX_DEPTH`` are left as they are.
    """
    with contextlib.suppress(TooDeep, FileNotFoundError):
        for listed in walk(folder):
            os.fchmod(listed.descriptor, 0o777)
            for name in listed.others:
                with open_regular(name, listed.descriptor) as file:
                    if file is not None:
                        os.fchmod(file.fileno(), 0o666)


def make_folder(live: Path, relative: str) -> None:
    """Make the folder ``relative`` (``users/ann``) under ``live``, open to every user, one
    part at a time by descriptor: a part that is a link is refused, not followed.

    Raises:
        OSError: a part is a link or not a folder, or ``live`` is gone.
    """
    descriptor = os.open(live, FOLDER)
    try:
        for part in relative.split("/"):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=descriptor)
            child = os.open(part, FOLDER, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = child
            os.fchmod(descriptor, 0o777)
    finally:
        os.close(descriptor)


def is_sealed(root: Path) -> bool:
    """Whether the tenant whose state folder is ``root`` is sealed: its sandboxes are then
    shown no live state, only the read-only copies its calls read."""
    return (root / SEALED).exists()


def prepare(root: Path) -> tuple[Path, Path]:
    """Make a tenant's live state folder (open to every user: see :func:`open_up`) and its
    views' folder under its state folder ``root``, and return the two."""
    live, views = root / LIVE, root / VIEWS
    live.mkdir(parents=True, exist_ok=True)
    views.mkdir(exist_ok=True)
    make_folder(live, SHARED)
    open_up(live)
    return live, views


class _Gate:
    """A tenant's writing calls, the captures that wait for them to end, and the state of
    each user whose live folder its calls have made (a tenant removed gets a new gate, so
    none is stale)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.live: dict[str | None, CallState] = {}
        self.writers = 0
        self.capturing: asyncio.Event | None = None  # set when a capture under way ends
        # What a capture awaits while writers are in flight (a future made only then: an
        # Event cleared and set by every call would cost each call two method calls).
        self.drained: asyncio.Future[None] | None = None


class StateLease:
    """The state one call runs with (``state``), and, for a call that may write the live
    state, its hold on it: a capture waits until every hold is released.

    The hold ends with the call (:meth:`TenantStates.end`), unless the call's runner
    :meth:`keep` s it: a call past its deadline may still be writing, and its hold ends
    only when its work has really stopped.
    """

    def __init__(
        self,
        state: CallState,
        gate: _Gate | None,
        captured: Mapping[str, str] | None = None,
        view: Path | None = None,
    ) -> None:
        self.state = state
        self.kept = False
        self.captured = captured
        """What a read-only call reads, and ``view`` the copy of it the call has."""
        self.view = view
        self._gate = gate
        if gate is not None:
            gate.writers += 1

    def keep(self) -> Callable[[], None]:
        """Keep the hold past the call's end, until the function returned is called."""
        self.kept = True
        return self.release

    def release(self) -> None:
        """End the hold; again is nothing."""
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.writers -= 1
            drained = gate.drained
            if not gate.writers and drained is not None and not drained.done():
                drained.set_result(None)


class TenantStates:
    """The state of every tenant of one data folder, and the seals that freeze it.

    Args:
        data_dir: the data folder.
        store: where captured state is kept, as blobs, and where seals are recorded.
    """

    def __init__(self, data_dir: Path, store: Store) -> None:
        self._data_dir = data_dir.absolute()  # agent code may change its working folder
        self._store = store
        self._gates: dict[str, _Gate] = {}
        self.seals: dict[str, Sealing] = {}
        """The sealed tenants' seals, by tenant."""

    def load(self) -> None:
        """Read the seals from the store, and remove what calls cut short by a stop left
        of their views."""
        self.seals = self._store.seals()
        for views in (self._data_dir / "tenants").glob(f"*/state/{VIEWS}"):
            remove_folder(views)
        # The marker follows the store: a crash between the two left one as it was.
        for marker in (self._data_dir / "tenants").glob(f"*/state/{SEALED}"):
            if marker.parent.parent.name not in self.seals:
                marker.unlink()
        for tenant in self.seals:
            self.mark_sealed(tenant, True)

    def mark_sealed(self, tenant: str, sealed: bool) -> None:
        """Mark the tenant's state folder sealed or not, for its sandboxes to come."""
        marker = state_root(self._data_dir, tenant) / SEALED
        if sealed:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    def _gate(self, tenant: str) -> _Gate:
        gate = self._gates.get(tenant)
        if gate is None:
            gate = self._gates[tenant] = _Gate(state_root(self._data_dir, tenant))
        return gate

    def forget(self, tenant: str) -> None:
        """A removed tenant: forget its seal and its writing calls."""
        self.seals.pop(tenant, None)
        self._gates.pop(tenant, None)

    # -- calls --------------------------------------------------------------------------

    def begin_warm(self, tenant: str, user: str | None) -> StateLease | None:
        """:meth:`begin` without awaiting, for most calls: a live call of a user seen
        before, while the tenant is neither sealed nor being captured; else ``None``."""
        gate = self._gates.get(tenant)
        if gate is None or gate.capturing is not None or tenant in self.seals:
            return None
        known = gate.live.get(user)
        return None if known is None else StateLease(known, gate)

    async def begin(
        self,
        tenant: str,
        user: str | None,
        snapshot: str | None = None,
        captured: Mapping[str, str] | None = None,
    ) -> StateLease:
        """The state one call runs with: give the lease to :meth:`end` when the call ends.

        ``captured`` is the state of the snapshot a call runs in. A call of the live
        code of a sealed tenant reads the state captured when it was sealed; any
        other reads and writes the tenant's live state. (Two methods, not a context
        manager: this is every call's, and a context manager costs a few µs more.)

        Raises:
            InvalidNameError: ``user`` breaks the naming rule.
        """
        gate = self._gate(tenant)
        root = gate.root
        if captured is None:
            while gate.capturing is not None:
                await gate.capturing.wait()
            sealing = self.seals.get(tenant)
            if sealing is not None:  # sealed while it waited, perhaps
                captured = sealing.state
        if captured is None:
            warm = self.begin_warm(tenant, user)  # a user seen before, after the wait
            if warm is not None:
                return warm
            folder = user_folder(user)
            state = CallState(
                tenant, None, root, f"{LIVE}/{folder}", f"{LIVE}/{SHARED}", user, False
            )
            lease = StateLease(state, gate)  # held before anything awaits: see held()
            try:
                await asyncio.to_thread(self._make_live, root, folder)
            except BaseException:
                lease.release()
                raise
            if len(gate.live) >= _USERS_KEPT:
                gate.live.clear()
            gate.live[user] = state
            return lease
        folder = user_folder(user)
        view = f"{VIEWS}/{uuid.uuid4().hex}"
        await asyncio.to_thread(self._lay_out_view, root / view, captured, folder)
        own, shared = f"{view}/{folder}", f"{view}/{SHARED}"
        state = CallState(tenant, snapshot, root, own, shared, user, True)
        return StateLease(state, None, captured, root / view)

    async def end(self, lease: StateLease, failure: BaseException | None) -> None:
        """The call of ``lease`` ended (``failure``: with what it raised).

        Raises:
            ReadOnlyStateError: a read-only call changed its state, or failed writing.
        """
        if not lease.kept:
            lease.release()
        view, captured = lease.view, lease.captured
        if view is None or captured is None:
            return
        state = lease.state
        try:
            if isinstance(failure, AgentError) and failure.error_type in _WRITE_REFUSED:
                detail = f"the call failed writing: {failure.error_type}: {failure.message}"
                raise ReadOnlyStateError(state.tenant, state.snapshot, detail) from None
            if failure is None:
                changed = await asyncio.to_thread(_changes, view, captured)
                if changed:
                    detail = f"the call wrote to it ({changed}); what it wrote was discarded"
                    raise ReadOnlyStateError(state.tenant, state.snapshot, detail)
        finally:
            await asyncio.to_thread(remove_folder, view)

    @staticmethod
    def _make_live(root: Path, folder: str) -> None:
        """Make a live folder (and the views' folder)."""
        try:
            (root / LIVE).mkdir(parents=True, exist_ok=True)
            (root / VIEWS).mkdir(exist_ok=True)
            make_folder(root / LIVE, folder)
        except OSError:
            pass  # the tenant is being removed, or its code put a link there: no folder

    def _lay_out_view(self, view: Path, captured: Mapping[str, str], folder: str) -> None:
        view.mkdir(parents=True)
        self._store.lay_out(view, captured)
        for made in (SHARED, folder):
            (view / made).mkdir(parents=True, exist_ok=True)
        for parent, _, files in os.walk(view):
            for name in files:
                os.chmod(os.path.join(parent, name), 0o444)
            os.chmod(parent, 0o555)

    # -- captures -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def held(self, tenant: str) -> AsyncIterator[None]:
        """Hold the tenant's writing calls: wait for those in flight, keep new ones back."""
        gate = self._gate(tenant)
        while gate.capturing is not None:
            await gate.capturing.wait()
        ended = gate.capturing = asyncio.Event()
        try:
            if gate.writers:
                gate.drained = asyncio.get_running_loop().create_future()
                try:
                    await gate.drained
                finally:
                    gate.drained = None
            yield
        finally:
            gate.capturing = None
            ended.set()

    def capture(self, tenant: str) -> dict[str, str]:
        """Store the tenant's live state as blobs and return its manifest (path -> sha256).

        Call it while the tenant is :meth:`held`. Only regular files are read, by
        descriptor (see :mod:`plughost.folders`): a link is never followed, even one a
        sandbox's code swaps in while this runs.

        Raises:
            StateTooLargeError: the state passes a limit; nothing is captured.
        """
        live = state_root(self._data_dir, tenant) / LIVE
        manifest: dict[str, str] = {}
        if not live.is_dir():
            return manifest  # no call has run yet
        size = 0
        try:
            for listed in walk(live):
                for name in listed.others:
                    if name.startswith(_NOT_STATE):
                        continue
                    data = read_regular(name, listed.descriptor)
                    if data is None:
                        continue
                    size += len(data)
                    if len(manifest) >= MAX_STATE_FILES or size > MAX_STATE_BYTES:
                        raise StateTooLargeError(
                            tenant, f"over {MAX_STATE_FILES} files or {MAX_STATE_BYTES} bytes"
                        )
                    manifest[listed.child(name)] = self._store.put_blob(data)
        except TooDeep:
            raise StateTooLargeError(tenant, f"folders nest deeper than {MAX_DEPTH}") from None
        return manifest

    async def restore(self, tenant: str, captured: Mapping[str, str]) -> None:
        """Make the tenant's live state exactly ``captured``; call it while it is :meth:`held`.

        The folder itself stays (a sandbox shows it as it is): what it holds is replaced,
        by renames from a folder beside it, which never follow a link put there meanwhile.
        """
        await asyncio.to_thread(self._restore, tenant, captured)
        self._gate(tenant).live.clear()  # what calls made is gone with the old state

    def _restore(self, tenant: str, captured: Mapping[str, str]) -> None:
        root = state_root(self._data_dir, tenant)
        live = root / LIVE
        live.mkdir(parents=True, exist_ok=True)
        staging = root / f".tmp-{uuid.uuid4().hex}"
        try:
            self._store.lay_out(staging, captured)
            (staging / SHARED).mkdir(exist_ok=True)
            open_up(staging)
            for entry in os.listdir(live):
                _remove_entry(live / entry)
            for entry in os.listdir(staging):
                _remove_entry(live / entry)  # made again meanwhile by running code
                os.rename(staging / entry, live / entry)
        finally:
            remove_folder(staging)


def _changes(view: Path, captured: Mapping[str, str]) -> str:
    """What a call changed in its view, in words; empty if nothing."""
    seen: set[str] = set()
    changed: list[str] = []
    try:
        for listed in walk(view):
            for name in listed.others:
                path = listed.child(name)
                seen.add(path)
                if path not in captured:
                    changed.append(f"{path} was written")
                elif regular_sha256(name, listed.descriptor) != captured[path]:
                    changed.append(f"{path} was changed")
    except TooDeep:
        changed.append(f"folders were made deeper than {MAX_DEPTH}")
    changed += [f"{path} was removed" for path in sorted(set(captured) - seen)]
    return "; ".join(changed)


def _remove_entry(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        remove_folder(path)
    else:
        path.unlink(missing_ok=True)
