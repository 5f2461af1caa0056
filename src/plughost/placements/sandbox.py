"""The ``sandbox`` placement: a tenant's worker in an OS sandbox, for code you do not trust.

The worker is the ``process`` placement's, supervised the same way, but its
process runs inside bubblewrap (``bwrap``, which makes Linux namespaces):

- files: a read-only view of the system (``/usr``), of the interpreter and
  of plughost's own code, the tenant's bundle at ``/bundle`` (read-only) and
  a private ``/tmp`` in memory, and the tenant's own state at ``/state``
  (its live state writable, its snapshots' read-only); nothing else of the
  data folder (no store, no other tenant, no token) nor of the host;
- network: none, in an empty network namespace of its own (the host is
  reached through the inherited socket pair only);
- processes: a pid namespace of its own, whose processes all die with it;
- user: when the host runs as root, a user id of its own for each sandbox
  (``setpriv``), without capabilities, with no-new-privileges; otherwise
  the host's own, mapped to ``nobody`` in a user namespace;
- kernel calls: a seccomp filter (:mod:`.seccomp`) refuses new user
  namespaces, the keyrings, ptrace, bpf, io_uring and the like;
- limits (``prlimit``): address space, CPU time, processes and threads,
  open files, file size, the size of ``/tmp``, and of a message to the host;
  a call past its deadline renews the worker, since its code cannot be
  stopped any other way.

A breached limit is named: a call that met it fails with
:class:`~plughost.errors.LimitExceededError` and the worker is renewed (a new
one takes over, then the old one is killed: what its code left behind cannot
be trusted on); a worker killed by one (its CPU time in all) is restarted with the
limit in its error.

Whether sandboxes can be made here is checked once (:func:`availability`);
when they cannot, a deploy asking for one fails with
:class:`~plughost.errors.PlacementUnavailableError`: never a weaker placement.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import PlacementUnavailableError, WorkerStartFailed
from ..manifest import SandboxLimits, read_manifest
from ..protocol import WorkerSpec
from ..state import LIVE, VIEWS, is_sealed, prepare
from . import seccomp
from .base import Launch, Started
from .process_group import kill_session
from .worker import Worker
from .worker_spawn import ENTRY, ProcessFactory, _Process, describe_exit

logger = logging.getLogger("plughost.sandbox")

BUNDLE = "/bundle"
"""Where the tenant's bundle is, inside its sandbox."""
LIBRARIES = "/libraries"
"""Where the tenant's own installed libraries are, inside its sandbox."""
STATE = "/state"
"""Where the tenant's state folder is, inside its sandbox: ``live/`` (not in a snapshot's
sandbox) and ``views/``, read-only."""
_TMP = "/tmp"
_SYSTEM = ("/usr",)
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_CPU_GRACE = 5  # seconds of CPU past the soft limit (SIGXCPU) before SIGKILL
_UID_RANGE = 1 << 16
_OUTPUT_BYTES_PER_SECOND = 64 << 10


@dataclass(frozen=True)
class HostView:
    """What of the host every sandbox shows, read-only, at the host's own paths.

    Attributes:
        binds: folders shown (the interpreter's, the packages', plughost's).
        package_root: the folder that holds ``plughost``, first on the worker's path.
        python: the interpreter the worker runs.
        own_uid: sandboxes get user ids of their own (the host runs as root).
    """

    binds: tuple[str, ...]
    package_root: str
    python: str
    own_uid: bool


def host_view(data_dir: Path) -> HostView:
    """What sandboxes show of this host; none of it may hold the data folder or its token.

    Raises:
        PlacementUnavailableError: a folder the worker needs holds the data folder.
    """
    package_root = Path(__file__).resolve().parents[2]  # the folder that holds plughost/
    wanted = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), package_root}
    wanted |= {Path(entry) for entry in sys.path if entry.endswith(("site-packages", ".zip"))}
    folders = sorted(
        {path.resolve() for path in wanted if path.exists()}, key=lambda p: len(p.parts)
    )
    binds: list[Path] = []
    for folder in folders:
        if not any(folder.is_relative_to(shown) for shown in [*map(Path, _SYSTEM), *binds]):
            binds.append(folder)
    secret = data_dir.resolve()
    system = [Path(folder) for folder in _SYSTEM]
    system += [Path(link).resolve() for link in _SYSTEM_LINKS if os.path.exists(link)]
    for folder in [*system, *binds]:
        # The token file lies beside the data folder: showing its parent would show it.
        if secret.is_relative_to(folder) or secret.parent == folder:
            raise PlacementUnavailableError(
                "sandbox", f"the data folder {secret} lies in {folder}, which a sandbox must show"
            )
    return HostView(
        tuple(str(folder) for folder in binds),
        str(package_root),
        sys.executable,
        own_uid=os.geteuid() == 0,
    )


class _Uids:
    """User ids for sandboxes, one each while it runs: limits on processes count per user.

    Ids are taken in turn through the range, not the lowest free one: what the kernel
    keeps for a user id after its last process ends is not found by the next sandbox.
    Each host process takes its own range (by its pid), so two hosts on one machine
    seldom share one; ``PLUGHOST_SANDBOX_UID_BASE`` sets the range's start.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_use: set[int] = set()
        self._base: int | None = None
        self._next = 0

    def take(self) -> int:
        with self._lock:
            if self._base is None:
                configured = os.environ.get("PLUGHOST_SANDBOX_UID_BASE")
                self._base = (
                    int(configured) if configured else (1 << 20) + (os.getpid() % 512) * _UID_RANGE
                )
            for _ in range(_UID_RANGE):
                uid = self._base + self._next
                self._next = (self._next + 1) % _UID_RANGE
                if uid not in self._in_use:
                    self._in_use.add(uid)
                    return uid
            raise RuntimeError(f"all {_UID_RANGE} sandbox user ids are in use")

    def give_back(self, uid: int) -> None:
        with self._lock:
            self._in_use.discard(uid)


_uids = _Uids()


def _folders_above(path: str, shown: Iterable[str]) -> list[str]:
    """The folders above ``path`` that the sandbox must make (readable by anyone), but
    those within a folder it ``shown`` already."""
    above = []
    for parent in reversed(Path(path).parents):
        text = str(parent)
        if text != "/" and not any(parent.is_relative_to(each) for each in shown):
            above.append(text)
    return above


@dataclass(frozen=True)
class SandboxCommand:
    """How to start a sandbox: ``argv``, with ``options`` (bwrap's, NUL-separated) and
    ``seccomp`` (the filter, if any) each read from a descriptor of its own.

    bwrap reads its options from a descriptor (``--args``), so that the command
    line a sandbox sees of its first process (``/proc/1/cmdline``) lists neither
    the folders it shows nor where its bundle is on the host.
    """

    argv: list[str]
    options: bytes
    seccomp: bytes | None

    def popen(self, pass_fds: Iterable[int], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start it, with the descriptors ``pass_fds`` kept open in it."""
        given: list[int] = []
        try:
            flags = []
            for flag, data in (("--args", self.options), ("--seccomp", self.seccomp)):
                if data is not None:
                    given.append(_readable(data))
                    flags += [flag, str(given[-1])]
            at = self.argv.index("bwrap") + 1
            argv = [*self.argv[:at], *flags, *self.argv[at:]]
            return subprocess.Popen(argv, pass_fds=[*pass_fds, *given], **kwargs)
        finally:
            for descriptor in given:
                os.close(descriptor)


def _readable(data: bytes) -> int:
    """A descriptor to read ``data`` from: a pipe, filled already (``data`` is small)."""
    reader, writer = os.pipe()
    try:
        os.write(writer, data)
    finally:
        os.close(writer)
    return reader


def bwrap_command(
    view: HostView,
    bundle: Path,
    limits: SandboxLimits,
    uid: int | None,
    command: list[str],
    libraries: Path | None = None,
    state: tuple[Path | None, Path] | None = None,
) -> SandboxCommand:
    """How to run ``command`` in a sandbox showing ``bundle`` at ``/bundle`` (and
    ``libraries`` at ``/libraries``), read-only, and the tenant's ``state`` (its live
    folder, writable, if given, and its views' folder, read-only) under ``/state``.

    ``uid`` is the sandbox's own user id (the host is root), or ``None`` for the host's
    own, mapped to ``nobody``.
    """
    limit_flags = [
        f"--as={limits.memory_bytes}",
        f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + _CPU_GRACE}",
        f"--nofile={limits.open_files}",
        f"--fsize={limits.file_size_bytes}",
        "--core=0",
    ]
    if uid is not None:  # counted per user: only a user of its own makes it the sandbox's
        limit_flags.append(f"--nproc={limits.processes}")
    # When memory runs out on the host, the kernel's OOM killer takes a sandbox first.
    launcher = ["prlimit", *limit_flags, "--", "choom", "-n", "1000", "--", "bwrap"]
    argv = ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    argv += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
    environment = {
        "PATH": "/usr/bin:/bin",
        "HOME": _TMP,
        "TMPDIR": _TMP,
        "LANG": "C.UTF-8",
        "MALLOC_ARENA_MAX": "2",  # each arena reserves address space, which is limited
        "PYTHONPATH": view.package_root,  # the worker runs the host's own plughost
    }
    for name, value in environment.items():
        argv += ["--setenv", name, value]
    for folder in _SYSTEM:
        argv += ["--ro-bind", folder, folder]
    for link in _SYSTEM_LINKS:
        if os.path.islink(link):
            argv += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            argv += ["--ro-bind", link, link]
    # /tmp first: a folder shown below it (an interpreter under /tmp) is mounted on top.
    argv += ["--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", _TMP]
    bound: list[str] = [*_SYSTEM]
    made: set[str] = {_TMP}
    for folder in view.binds:
        for above in _folders_above(folder, bound):
            if above not in made:
                argv += ["--perms", "0755", "--dir", above]
                made.add(above)
        argv += ["--ro-bind", folder, folder]
        bound.append(folder)
    argv += ["--ro-bind", str(bundle), BUNDLE, "--proc", "/proc", "--dev", "/dev", "--chdir", _TMP]
    if libraries is not None:
        argv += ["--ro-bind", str(libraries), LIBRARIES]
    if state is not None:
        live, views = state
        argv += ["--perms", "0755", "--dir", STATE]
        if live is not None:
            argv += ["--bind", str(live), f"{STATE}/{LIVE}"]
        argv += ["--ro-bind", str(views), f"{STATE}/{VIEWS}"]
    argv += ["--cap-drop", "ALL"]
    if uid is None:
        argv += ["--unshare-user", "--uid", "65534", "--gid", "65534", "--disable-userns"]
    else:
        # bwrap keeps only what setpriv needs to become the sandbox's user, which drops it.
        for capability in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):
            argv += ["--cap-add", capability]
        setpriv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        command = [*setpriv, "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", *command]
    options = b"".join(option.encode() + b"\0" for option in argv)
    return SandboxCommand([*launcher, "--", *command], options, seccomp.program())


def _worker_command(view: HostView, descriptor: int) -> list[str]:
    # No user site (-s), no working folder on the path (-P); the environment is the one
    # bwrap sets, whose PYTHONPATH is plughost's own folder. Files it writes are for any
    # uid: the tenant's next sandbox, under another, writes its state too.
    entry = f"import os; os.umask(0); {ENTRY}"
    return [view.python, "-s", "-P", "-c", entry, str(descriptor)]


_AVAILABLE: set[HostView] = set()  # a failure is tried again: it may have been the moment's


def _probe(view: HostView) -> str:
    if view in _AVAILABLE:
        return "available"
    if shutil.which("bwrap") is None:
        return "unavailable: bwrap not found (install bubblewrap)"
    for tool in ("prlimit", "choom", "setpriv") if view.own_uid else ("prlimit", "choom"):
        if shutil.which(tool) is None:
            return f"unavailable: {tool} not found (install util-linux)"
    empty = Path(view.package_root)  # any folder will do as the bundle
    uid = _uids.take() if view.own_uid else None
    try:
        command = bwrap_command(
            view, empty, SandboxLimits(), uid, [view.python, "-I", "-S", "-c", ""]
        )
        started = command.popen((), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, errors = started.communicate(timeout=10)
        finally:
            started.kill()
            started.wait()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"
    finally:
        if uid is not None:
            _uids.give_back(uid)
    if started.returncode != 0:
        lines = errors.decode(errors="replace").strip().splitlines() or [
            f"exit status {started.returncode}"
        ]
        return f"unavailable: {lines[-1]}"
    _AVAILABLE.add(view)
    return "available"


def availability(data_dir: Path) -> str:
    """``"available"``, or ``"unavailable: <why>"``: whether sandboxes can be made here.

    Tried once for each view of the host: a sandbox that runs nothing is made
    with every flag a worker's gets (about 30 ms).
    """
    try:
        view = host_view(data_dir)
    except PlacementUnavailableError as exc:
        return f"unavailable: {exc.reason}"
    return _probe(view)


def _log_output(tenant: str, descriptor: int) -> None:
    """Log what a sandbox writes to its standard output and error, at a bounded rate
    (a thread's work, until the sandbox's last process closes it).

    Past the rate the sandbox waits on its own writes: a flood costs the host little,
    and is held nowhere.
    """
    window, used = time.monotonic(), 0
    partial = b""
    with open(descriptor, "rb", buffering=0) as stream:
        while chunk := stream.read(16 << 10):
            used += len(chunk)
            if used > _OUTPUT_BYTES_PER_SECOND:
                time.sleep(max(0.0, window + 1 - time.monotonic()))
                window, used = time.monotonic(), 0
            *complete, partial = (partial + chunk).split(b"\n")
            partial = partial[-4096:]  # a line without an end is logged in part
            for line in complete:
                logger.info("[%s] %s", tenant, line[:1000].decode(errors="replace"))


class _SandboxProcess(_Process):
    """A worker process inside a sandbox."""

    def __init__(
        self,
        spec: WorkerSpec,
        on_request: Callable[[str, tuple[Any, ...]], Awaitable[Any]],
        on_exit: Callable[[str], None],
        *,
        view: HostView | None,
        availability: str,
        limits: SandboxLimits,
        bundle: Path,
    ) -> None:
        super().__init__(spec, on_request, on_exit)
        self._view = view
        self._availability = availability
        self._limits = limits
        self._bundle = bundle
        self._uid: int | None = None

    def _popen(self, descriptor: int) -> subprocess.Popen[bytes]:
        if self._view is None:  # a tenant of the data folder, at a start where it cannot run
            raise WorkerStartFailed(
                self.spec.tenant, "sandbox", "PlacementUnavailableError", self._availability
            )
        reader, writer = os.pipe()
        try:
            if self._view.own_uid:
                self._uid = _uids.take()
            command = bwrap_command(
                self._view,
                self._bundle,
                self._limits,
                self._uid,
                _worker_command(self._view, descriptor),
                Path(self.spec.libraries) if self.spec.libraries else None,
                self._state(),
            )
            process = command.popen(
                [descriptor],
                stdin=subprocess.DEVNULL,
                stdout=writer,
                stderr=writer,
                start_new_session=True,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        except BaseException:
            os.close(reader)
            self._give_back_uid()
            raise
        finally:
            os.close(writer)
        try:
            threading.Thread(
                target=_log_output,
                args=(self.spec.tenant, reader),
                name=f"sandbox-output-{self.spec.tenant}",
                daemon=True,
            ).start()
        except BaseException:
            os.close(reader)
            kill_session(process.pid)
            process.wait()
            self._give_back_uid()
            raise
        return process

    def _state(self) -> tuple[Path | None, Path] | None:
        """The tenant's live state folder (none for a snapshot's sandbox) and views'."""
        if self.spec.state is None:
            return None
        root = Path(self.spec.state)
        live, views = prepare(root)
        writable = self.spec.snapshot is None and not is_sealed(root)
        return (live if writable else None), views

    def _first_frame(self) -> dict[str, Any]:
        libraries = LIBRARIES if self.spec.libraries else None
        state = STATE if self.spec.state else None
        spec = replace(self.spec, folder=BUNDLE, data_dir=_TMP, libraries=libraries, state=state)
        return spec.to_message()

    def _max_frame(self) -> int:
        # What the host may have to decode of one message: its objects take some 25 times
        # the bytes of their JSON.
        return self._limits.message_bytes

    def _exit_reason(self, returncode: int | None) -> str:
        if returncode == 128 + signal.SIGXCPU:
            return (
                f"the worker reached its cpu_seconds limit"
                f" ({self._limits.cpu_seconds} s of CPU time)"
            )
        return describe_exit(returncode)

    def _lost(self, reason: str) -> None:
        super()._lost(reason)
        if self.process is None or self.process.returncode is not None:
            self._give_back_uid()  # else once it is reaped: until then its processes may live

    async def _exited(self) -> None:
        await super()._exited()
        self._give_back_uid()

    async def _reap(self) -> None:
        await super()._reap()
        self._give_back_uid()

    async def stop(self, timeout: float) -> None:
        await super().stop(timeout)
        self._give_back_uid()

    def _give_back_uid(self) -> None:
        if self._uid is not None:
            _uids.give_back(self._uid)
            self._uid = None


class Sandbox(Worker):
    """Runs each namespace in a supervised worker inside an OS sandbox.

    Args:
        limits: every tenant's limits.
        tenant_limits: a tenant's own, in place of ``limits`` (only those it sets).
        Others: as :class:`~plughost.placements.worker.Worker`.
    """

    name = "sandbox"
    recycle_after_timeout = True
    mounts_state = True

    def __init__(
        self,
        *args: Any,
        limits: SandboxLimits,
        tenant_limits: Mapping[str, SandboxLimits],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._tenant_limits = dict(tenant_limits)
        self.availability = "unavailable: not checked yet (the network has not started)"
        self._view: HostView | None = None

    def check(self) -> str:
        self.availability = availability(self._data_dir)
        self._view = host_view(self._data_dir) if self.availability == "available" else None
        return self.availability

    def limits_of(
        self, tenant: str, asked: SandboxLimits | None = None, *, refuse: bool = False
    ) -> SandboxLimits:
        """The limits of ``tenant``'s sandboxes, lowered to what its bundle ``asked``
        (and no higher than the tenant is given).

        Raises:
            BundleRejectedError: with ``refuse``, the bundle asks for more than the
                tenant is given.
        """
        own = self._tenant_limits.get(tenant)
        ceiling = self._limits
        if own is not None:
            ceiling = ceiling.model_copy(
                update={name: getattr(own, name) for name in own.model_fields_set}
            )
        return ceiling if asked is None else ceiling.lowered_to(asked, refuse=refuse)

    def _launch_limits(self, launch: Launch) -> SandboxLimits:
        # A deploy asking too much was refused (start); a bundle deployed before the
        # config lowered its tenant's limits runs within the new ones.
        return self.limits_of(launch.tenant, read_manifest(launch.folder).sandbox)

    def _spec(self, launch: Launch) -> WorkerSpec:
        limits = self._launch_limits(launch)
        named = tuple(sorted(limits.model_dump().items()))
        return replace(super()._spec(launch), limits=named)

    def _process(self, launch: Launch, spec: WorkerSpec) -> ProcessFactory:
        return functools.partial(
            _SandboxProcess,
            view=self._view,
            availability=self.availability,
            limits=SandboxLimits(**dict(spec.limits)),  # as _spec worked them out
            bundle=launch.folder.resolve(),
        )

    async def start(self, launch: Launch) -> Started:
        if self._view is None:
            raise PlacementUnavailableError(
                self.name, self.availability.removeprefix("unavailable: ")
            )
        if launch.live:  # a deploy: a bundle asking for more than it is given is refused
            self.limits_of(launch.tenant, read_manifest(launch.folder).sandbox, refuse=True)
        return await super().start(launch)
