"""A tenant's libraries: the requirements its bundle names, installed into environments.

A bundle's ``plughost.toml`` may say ``dependencies = ["toolz==0.12.0"]``.
At deploy, before anything is committed, they are installed (``uv pip
install --target``, in a subprocess) into an environment of the data folder::

    envs/<key>/              the installed files, read-only; <key> is the sha256 of
                             the interpreter's tag and every file's path and content
    envs/asked/<ask>         the key a requirement list was installed as (<ask> is its
                             sha256): a redeploy that asks the same installs nothing
    envs/.tmp-*              an install under way (removed at the next start)

Two tenants, or two versions, whose lists install the same files share one copy.
In process, a namespace imports an environment's modules under its own
keys, like its own files (see :mod:`plughost.loader`); in a worker, a finder
of its own finds them ahead of the installed packages. A library with compiled extensions cannot
be loaded twice in one process: in process it is refused, unless the host's
own copy satisfies the requirement, and then that copy is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import os
import re
import signal
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .errors import DependencyError
from .store import remove_folder, write_durably

Progress = Callable[[str], None]
_COMPILED = (".so", ".pyd")
_INTERPRETER = re.compile(r"(interpreter at: ).*")
_INSTALLS_AT_ONCE = 2  # each is mostly downloads and unpacking, on every core


@dataclass(frozen=True)
class Environment:
    """An installed set of libraries.

    Attributes:
        key: its name in ``envs/``.
        folder: where its files are.
        pins: what it holds, as ``name==version``.
        compiled: the distributions of it with compiled extensions, by name.
        modules: the top-level modules and packages of each distribution, by name.
        shared: distributions a namespace in process takes from the host instead.
    """

    key: str
    folder: Path
    pins: tuple[str, ...]
    compiled: frozenset[str]
    modules: dict[str, frozenset[str]]
    shared: frozenset[str] = frozenset()
    asked: tuple[str, ...] = ()
    """The requirements it was asked as."""

    def module_names(self) -> frozenset[str]:
        """The top-level names a namespace in process imports from it."""
        names: set[str] = set()
        for distribution, modules in self.modules.items():
            if distribution not in self.shared:
                names |= modules
        return frozenset(names)


class Environments:
    """The environments of one data folder.

    Args:
        root: the ``envs`` folder.
        python: the interpreter the libraries are for (the host's).
    """

    def __init__(
        self, root: Path, python: str = sys.executable, install_timeout: float = 300.0
    ) -> None:
        self.root = root
        self._python = python
        self._tag = f"{sys.implementation.cache_tag}-{sys.platform}-{os.uname().machine}"
        self._installing: dict[str, asyncio.Task[Environment]] = {}
        self._processes: set[asyncio.subprocess.Process] = set()
        self._slots = asyncio.Semaphore(_INSTALLS_AT_ONCE)
        self.timeout = install_timeout
        home = os.environ.get("HOME")
        self._host_folders = [
            (folder, shown)
            for folder, shown in (
                (str(root.resolve()), "<envs>"),
                (python, "<python>"),
                (sys.prefix, "<prefix>"),
                (sys.base_prefix, "<prefix>"),
                (home, "~"),
            )
            if folder and folder != "/"
        ]
        # An environment never changes once named: what was read of one is kept, by ask.
        self._known: dict[str, Environment] = {}

    def open(self) -> None:
        """Make the folders; remove what an install that was cut off left."""
        (self.root / "asked").mkdir(parents=True, exist_ok=True)
        for path in self.root.glob(".tmp-*"):
            remove_folder(path)

    def _ask(self, requirements: list[str]) -> str:
        return hashlib.sha256("\n".join([self._tag, *requirements]).encode()).hexdigest()

    def find(self, requirements: list[str]) -> Environment | None:
        """The environment ``requirements`` were installed as, if it is here."""
        asked = self.root / "asked" / self._ask(requirements)
        try:
            key = asked.read_text().strip()
        except OSError:
            return None
        folder = self.root / key
        return _read(key, folder) if folder.is_dir() else None

    async def ensure(
        self, tenant: str, requirements: list[str], *, progress: Progress | None = None
    ) -> Environment:
        """The environment of ``requirements``: found, or installed now (off the loop).

        Raises:
            DependencyError: the installer failed; its error names the requirement.
        """
        known = self._known.get(self._ask(requirements))
        if known is not None and known.folder.is_dir():
            return known
        found = await asyncio.to_thread(self.find, requirements)
        if found is not None:
            return self._remember(requirements, found)
        ask = self._ask(requirements)
        # Two deploys that ask the same at once install once.
        task = self._installing.get(ask)
        if task is None:
            task = asyncio.ensure_future(self._install(tenant, requirements, progress))
            self._installing[ask] = task
            task.add_done_callback(lambda _: self._installing.pop(ask, None))
        try:
            installed = await asyncio.shield(task)
        except DependencyError as exc:  # maybe another tenant's install of the same list
            raise DependencyError(tenant, requirements, exc.reason) from None
        return self._remember(requirements, installed)

    def _remember(self, requirements: list[str], environment: Environment) -> Environment:
        named = replace(environment, asked=tuple(requirements))
        self._known[self._ask(requirements)] = named
        return named

    async def _install(
        self, tenant: str, requirements: list[str], progress: Progress | None
    ) -> Environment:
        import uv  # the installer, a dependency; imported where it is used

        temporary = self.root / f".tmp-{uuid.uuid4().hex}"
        listing = self.root / f".tmp-{uuid.uuid4().hex}.txt"
        listing.write_text("".join(f"{line}\n" for line in requirements))
        command = [uv.find_uv_bin(), "pip", "install", "--no-progress", "--color", "never"]
        # Wheels only: building a source distribution runs its code, here, as the server.
        # No configuration of the host's; files copied, since a hard link into the
        # installer's cache would let a write through an environment change the cache.
        command += ["--no-build", "--no-config", "--link-mode", "copy"]
        command += ["--python", self._python, "--target", str(temporary), "-r", str(listing)]
        said: list[str] = []
        try:
            async with self._slots:
                process = await asyncio.create_subprocess_exec(
                    *command,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    env=self._installer_environment(),
                    start_new_session=True,  # stopped with everything it started
                )
                self._processes.add(process)
                try:
                    await asyncio.wait_for(self._relay(process, said, progress), self.timeout)
                except TimeoutError:
                    raise DependencyError(
                        tenant, requirements, f"the install took over {self.timeout:.0f} s"
                    ) from None
                finally:
                    _kill_session(process)
                    await process.wait()
                    self._processes.discard(process)
            if process.returncode != 0:
                raise DependencyError(tenant, requirements, _reason(said))
            environment = await asyncio.to_thread(self._keep, requirements, temporary)
        finally:
            listing.unlink(missing_ok=True)
            await asyncio.to_thread(remove_folder, temporary)
        return environment

    async def _relay(
        self, process: asyncio.subprocess.Process, said: list[str], progress: Progress | None
    ) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = self._redacted(raw.decode(errors="replace").rstrip())
            said.append(line)
            if progress is not None:
                progress(line)
        await process.wait()

    def _installer_environment(self) -> dict[str, str]:
        """What of the host's environment the installer needs: ``PATH``, ``HOME`` (its
        download cache), how to reach the index (certificates, proxies) and the
        operator's ``UV_*`` settings (a mirror, say); no other variable, secrets none."""
        kept = {
            name: value
            for name, value in os.environ.items()
            if name in ("PATH", "HOME", "SSL_CERT_FILE", "SSL_CERT_DIR")
            or name.upper() in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
            or name.startswith("UV_")
        }
        return {**kept, "NO_COLOR": "1"}

    def _redacted(self, line: str) -> str:
        """``line`` without the host's folders: the tenant reads it."""
        line = _INTERPRETER.sub(r"\1<python>", line)  # named relative to the server's folder
        for folder, shown in self._host_folders:
            line = line.replace(folder, shown)
        return line

    async def close(self) -> None:
        """Stop the installs under way (the network is stopping)."""
        for process in list(self._processes):
            _kill_session(process)

    def _keep(self, requirements: list[str], temporary: Path) -> Environment:
        """Name the installed folder by what it holds, and record what was asked."""
        key = _content_key(self._tag, temporary)
        folder = self.root / key
        if not folder.exists():
            _make_read_only(temporary)
            with contextlib.suppress(OSError):  # installed meanwhile, by another deploy
                temporary.rename(folder)
        if not folder.is_dir():
            raise OSError(f"the environment {key[:12]} could not be kept")
        write_durably(self.root / "asked" / self._ask(requirements), f"{key}\n".encode())
        return _read(key, folder)

    def keys_of(self, asked: Iterable[list[str]]) -> set[str]:
        """The keys the requirement lists ``asked`` were installed as."""
        found = set()
        for requirements in asked:
            with contextlib.suppress(OSError):
                found.add((self.root / "asked" / self._ask(requirements)).read_text().strip())
        return found

    def collect_garbage(self, keep: Iterable[list[str]]) -> int:
        """Remove the environments (and records of what was asked) that ``keep`` does not
        ask for; how many environments went."""
        kept_asks = {self._ask(requirements) for requirements in keep}
        kept = self.keys_of(keep)
        for asked in (self.root / "asked").iterdir():
            if asked.name not in kept_asks:
                asked.unlink(missing_ok=True)
        for ask in set(self._known) - kept_asks:
            del self._known[ask]
        removed = 0
        for folder in self.root.iterdir():
            if _is_environment(folder) and folder.name not in kept:
                remove_folder(folder)
                removed += 1
        return removed

    def check(self) -> list[str]:
        """Every inconsistency: a record of what was asked whose environment is missing,
        an environment whose contents are not what its name says."""
        problems = []
        for asked in sorted((self.root / "asked").glob("*")):
            key = asked.read_text().strip()
            if not (self.root / key).is_dir():
                problems.append(f"environment {key[:12]} (asked as {asked.name[:12]}) is missing")
        for folder in sorted(filter(_is_environment, self.root.iterdir())):
            if _content_key(self._tag, folder) != folder.name:
                held = ", ".join(_pins(folder)) or "nothing"
                problems.append(
                    f"environment {folder.name[:12]} ({held}): its files are not what its name says"
                )
        return problems


def for_in_process(environment: Environment, tenant: str) -> Environment:
    """``environment`` as a namespace in process may use it: its compiled distributions
    taken from the host where the host's copy satisfies what was asked.

    Raises:
        DependencyError: a compiled distribution the host cannot stand in for.
    """
    requirements = list(environment.asked)
    asked: dict[str, Requirement] = {
        canonicalize_name(Requirement(text).name): Requirement(text) for text in requirements
    }
    shared: set[str] = set()
    for distribution in sorted(environment.compiled):
        try:
            host = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            host = None
        requirement = asked.get(distribution)
        pinned = next(
            p.partition("==")[2] for p in environment.pins if p.startswith(f"{distribution}==")
        )
        # What was asked for by name decides; for a library pulled in by another, its version.
        wanted = requirement.specifier if requirement is not None else None
        if host is not None and (
            host == pinned if wanted is None else wanted.contains(host, prereleases=True)
        ):
            shared.add(distribution)
            continue
        raise DependencyError(
            tenant,
            requirements,
            f"{distribution} has compiled extensions, which cannot be loaded twice in one"
            " process, and the server's own copy does not satisfy what was asked;"
            ' deploy it with placement = "process" (or "sandbox")',
        )
    return replace(environment, shared=frozenset(shared))


def _reason(said: list[str]) -> str:
    """The lines of the installer's output that say what failed."""
    errors = [line for line in said if line.lstrip().startswith(("error:", "cause:", "hint:"))]
    return "\n".join(errors or said[-10:]).strip() or "the installer failed"


def _is_environment(folder: Path) -> bool:
    return folder.is_dir() and folder.name != "asked" and not folder.name.startswith(".tmp-")


def _pins(folder: Path) -> tuple[str, ...]:
    return tuple(sorted("==".join(_name_and_version(info)) for info in folder.glob("*.dist-info")))


def _name_and_version(info: Path) -> tuple[str, str]:
    """As the installer named the ``.dist-info`` folder (``name-version``), not as the
    package's own metadata says: a wheel may claim to be another package."""
    name, _, version = info.name.removesuffix(".dist-info").rpartition("-")
    return canonicalize_name(name), version


def _content_key(tag: str, folder: Path) -> str:
    """The sha256 of the interpreter's tag and every file's path and content: two
    installs share a folder only if they hold the same bytes."""
    digest = hashlib.sha256(tag.encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _kill_session(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def _read(key: str, folder: Path) -> Environment:
    pins: list[str] = []
    compiled: set[str] = set()
    modules: dict[str, frozenset[str]] = {}
    for info in folder.glob("*.dist-info"):
        name, version = _name_and_version(info)
        pins.append(f"{name}=={version}")
        record = (info / "RECORD").read_text(errors="replace") if (info / "RECORD").exists() else ""
        tops: set[str] = set()
        for line in record.splitlines():
            path = line.partition(",")[0]
            head = path.split("/", 1)[0]
            if path.endswith(_COMPILED):
                compiled.add(name)
            if head.endswith((".dist-info", ".data", ".libs")) or head in ("..", "bin"):
                continue
            if "/" in path:
                tops.add(head)
            elif path.endswith(".py"):
                tops.add(path[:-3])
        modules[name] = frozenset(tops)
    return Environment(key, folder, tuple(sorted(pins)), frozenset(compiled), modules)


def _make_read_only(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o444)
        os.chmod(folder, 0o555)
