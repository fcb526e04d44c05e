"""`requirements.txt` among the code files: which import names it declares."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

REQUIREMENTS_FILE = "requirements.txt"
KNOWN_IMPORT_NAMES: dict[str, tuple[str, ...]] = {
    "beautifulsoup4": ("bs4",),
    "opencv-python": ("cv2",),
    "opencv-python-headless": ("cv2",),
    "pillow": ("PIL",),
    "psycopg2-binary": ("psycopg2",),
    "pyyaml": ("yaml",),
    "python-dateutil": ("dateutil",),
    "python-dotenv": ("dotenv",),
    "scikit-learn": ("sklearn",),
    "google-cloud-bigquery": ("google",),
    "protobuf": ("google",),
    "pyjwt": ("jwt",),
}
"""Distributions whose import name isn't their name (the common ones; the rest map trivially)."""
_COMMENT = re.compile(r"(^|\s)#.*$")
_OPTION = re.compile(r"\s+--?[A-Za-z]")
"""Per-requirement options (`--hash=…`) follow the requirement after whitespace."""
_PATH_OR_URL = re.compile(r"^(\.|/|~|[A-Za-z][A-Za-z0-9+.-]*://)")


@dataclass
class Declared:
    """Import names a requirements file declares, and lines it could not read (line, column, why)."""

    modules: set[str] = field(default_factory=set)
    problems: list[tuple[int, int | None, str]] = field(default_factory=list)


def import_names(distribution: str) -> tuple[str, ...]:
    """The import names a distribution most likely provides (`Foo-Bar` → `foo_bar`)."""
    canonical = canonicalize_name(distribution)
    return KNOWN_IMPORT_NAMES.get(canonical, (canonical.replace("-", "_"),))


def parse_requirements(text: str) -> Declared:
    """Requirement lines (pip's syntax: comments, continuations, options) of one file."""
    declared = Declared()
    for number, line in _logical_lines(text):
        spec = _OPTION.split(_COMMENT.sub("", line).strip(), maxsplit=1)[0]
        if not spec or spec.startswith("-"):  # options (-r, -e, --index-url …) name no import
            continue
        if _PATH_OR_URL.match(spec):  # a local path or an archive URL: no name to go by
            continue
        try:
            req = Requirement(spec)
        except InvalidRequirement as e:
            message, _, context = str(e).partition("\n")
            declared.problems.append((number, _caret_column(context, line), message))
            continue
        if _applies(req):
            declared.modules.update(import_names(req.name))
    return declared


def _applies(req: Requirement) -> bool:
    """Whether pip would install it here (a marker for another platform: it declares nothing)."""
    try:
        return req.marker is None or req.marker.evaluate({"extra": ""})
    except Exception:  # an undecidable marker: give the benefit of the doubt
        return True


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first physical line number, text) with backslash continuations joined."""
    joined: list[tuple[int, str]] = []
    start = 0
    parts: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not parts:
            start = number
        if raw.endswith("\\") and not _COMMENT.search(raw):
            parts.append(raw[:-1])
            continue
        parts.append(raw)
        joined.append((start, "".join(parts)))
        parts = []
    if parts:
        joined.append((start, "".join(parts)))
    return joined


def _caret_column(context: str, line: str) -> int | None:
    """packaging shows the text and a `^` under the problem; its column in the original line."""
    shown, _, marks = context.partition("\n")
    at = marks.find("^")
    if at < 0:
        return None
    offset = line.find(shown.strip())
    return (offset if offset >= 0 else 0) + at - (len(shown) - len(shown.lstrip())) + 1
