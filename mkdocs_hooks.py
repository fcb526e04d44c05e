"""mkdocs hooks: the README is the site's home page (`mkdocs.yml`), written once.

Its links point into docs/ from the repository's root; on the site they are relative to the
docs themselves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

README = Path(__file__).parent / "README.md"


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "index.md", content=home(README.read_text())))
    return files


def home(readme: str) -> str:
    """The README with its `docs/…` links made relative to docs/."""
    return re.sub(r"\]\(docs/", "](", readme)
