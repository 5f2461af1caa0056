"""Where the admin token comes from, and where it is kept.

Tenant code runs in the data folder's tree (its bundles are extracted under
``bundles/``) and can walk up to the folder's root, so the folder holds the
admin token's sha256 only (``admin_token.sha256``). The token itself is
shown once when it is created and written beside the data folder, to
``<data folder>-admin-token``, for the operator to read, move or delete:
the server needs only the hash.

The environment's ``PLUGHOST_ADMIN_TOKEN`` is taken out of ``os.environ`` at
start (:func:`take_secrets_from_environment`), so that code loaded later,
and the workers the server starts, do not find it there. The kernel still
shows a process's starting environment in ``/proc/<pid>/environ`` to its
user's processes, which is why the stored hash is the default.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..store import write_durably
from ..tokens import hash_token

ADMIN_TOKEN_VARIABLE = "PLUGHOST_ADMIN_TOKEN"
CLIENT_TOKEN_VARIABLE = "PLUGHOST_TOKEN"
HASH_FILE = "admin_token.sha256"
LEGACY_TOKEN_FILE = "admin_token"


@dataclass(frozen=True)
class AdminToken:
    """The admin token a server accepts, known by its hash.

    Attributes:
        token_hash: sha256 of the token, hex.
        source: where it came from, for the start line.
        notes: lines to print at start: a token created now (shown this once),
            a token moved out of the data folder.
    """

    token_hash: str
    source: str
    notes: tuple[str, ...] = ()


def take_secrets_from_environment() -> str | None:
    """Remove the tokens from ``os.environ`` and return ``PLUGHOST_ADMIN_TOKEN``'s value.

    ``PLUGHOST_TOKEN`` is a client's setting that a server has no use for;
    it goes too, since a shell that exports it may well start the server.
    """
    os.environ.pop(CLIENT_TOKEN_VARIABLE, None)
    return os.environ.pop(ADMIN_TOKEN_VARIABLE, None) or None


def token_file_of(data_dir: Path) -> Path:
    """Where a created token is written: beside the data folder, never inside it."""
    folder = data_dir.resolve()
    return folder.parent / f"{folder.name}-admin-token"


def admin_token_for(
    data_dir: Path, *, from_environment: str | None = None, configured: str | None = None
) -> AdminToken:
    """The admin token: ``from_environment``, else ``configured``, else the stored hash,
    created with a new token on first use.

    A token file an older version kept inside the data folder is first turned
    into the stored hash and moved beside the folder.
    """
    notes = _move_legacy_token(data_dir)
    if from_environment:
        return AdminToken(
            hash_token(from_environment), f"the {ADMIN_TOKEN_VARIABLE} environment variable", notes
        )
    if configured:
        return AdminToken(hash_token(configured), "the config file", notes)
    hash_path = data_dir / HASH_FILE
    try:
        return AdminToken(hash_path.read_text().strip(), f"its hash in {hash_path}", notes)
    except FileNotFoundError:
        pass
    token = _new_token(data_dir)
    created = f"{hash_path} (created now)"
    return AdminToken(hash_token(token), created, (*notes, shown_once(data_dir, token)))


def rotate(data_dir: Path) -> str:
    """Replace the stored admin token with a new one; return the new token.

    A server reads the stored hash at start, so a running one accepts the old
    token until it restarts. A token from the environment or the config file
    wins over the stored one: change it there.
    """
    (data_dir / LEGACY_TOKEN_FILE).unlink(missing_ok=True)
    return _new_token(data_dir)


def shown_once(data_dir: Path, token: str) -> str:
    """The line that shows a new token, the one time it is shown."""
    return f"admin token (shown once, and written to {token_file_of(data_dir)}): {token}"


def _new_token(data_dir: Path) -> str:
    token = "pha_" + secrets.token_urlsafe(32)
    _keep(data_dir, token)
    return token


def _keep(data_dir: Path, token: str) -> None:
    # The hash is written last: a crash in between leaves the old token working.
    write_durably(token_file_of(data_dir), f"{token}\n".encode(), mode=0o600)
    write_durably(data_dir / HASH_FILE, f"{hash_token(token)}\n".encode(), mode=0o600)


def _move_legacy_token(data_dir: Path) -> tuple[str, ...]:
    legacy = data_dir / LEGACY_TOKEN_FILE
    try:
        token = legacy.read_text().strip()
    except FileNotFoundError:
        return ()
    _keep(data_dir, token)
    legacy.unlink()
    return (
        f"moved the admin token out of the data folder: its hash is in {data_dir / HASH_FILE}, "
        f"the token in {token_file_of(data_dir)}",
    )
