"""Scrubbing known secret values out of job output before it is recorded."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "***"
MIN_SECRET_CHARS = 4
"""Shorter values would redact ordinary words; they're too weak to be worth hiding anyway."""


class Scrubber:
    """Replaces known secret values in job output."""

    def __init__(self, values: Iterable[str]) -> None:
        secrets = sorted({v for v in values if len(v) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, secrets))) if secrets else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern else text
