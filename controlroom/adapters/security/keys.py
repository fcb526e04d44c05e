"""Server-side keys: taken from settings, or generated once into the data dir."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_BYTES = 32


def load_or_create(data_dir: Path, name: str) -> str:
    """A random urlsafe key stored (mode 0600) as `<data_dir>/keys/<name>`."""
    path = data_dir / "keys" / name
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_urlsafe(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key
