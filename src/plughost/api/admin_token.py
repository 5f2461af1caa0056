"""Where the admin token comes from: the environment, the config file or the data folder."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def admin_token_for(data_dir: Path, configured: str | None = None) -> tuple[str, str]:
    """Return the admin token and where it came from.

    ``PLUGHOST_ADMIN_TOKEN``, else ``configured``, else the file ``admin_token``
    in the data folder, created (readable by its owner only) on first use.
    """
    from_env = os.environ.get("PLUGHOST_ADMIN_TOKEN")
    if from_env:
        return from_env, "the PLUGHOST_ADMIN_TOKEN environment variable"
    if configured:
        return configured, "the config file"
    path = data_dir / "admin_token"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip(), f"{path}"
    with os.fdopen(descriptor, "w") as out:
        out.write("pha_" + secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip(), f"{path} (created now)"
