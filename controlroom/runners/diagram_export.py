"""Runner of diagram_export: `dot -Tsvg` and `dot -Tpng` for each source, into `output/`.

Environment: `CONTROLROOM_DIAGRAMS` (JSON list of source paths), `CONTROLROOM_DIAGRAMS_SKIPPED`
(JSON list of sources that can't be rendered here). `a/b.dot` becomes `output/a/b.svg` and
`output/a/b.png`; each rendered path is printed. A source `dot` rejects fails the run.
`dot` is the host's Graphviz if the PATH has one, else the bundled graphviz-pure (see
`controlroom.runners.graphviz`); the log says which.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path, PurePosixPath

from controlroom.runners.common import JobError, env_json, progress, run
from controlroom.runners.graphviz import INSTALL_HINT, dot_program, is_bundled

SOURCES_ENV = "CONTROLROOM_DIAGRAMS"
SKIPPED_ENV = "CONTROLROOM_DIAGRAMS_SKIPPED"
OUTPUT_DIR = Path("output")
FORMATS = ("svg", "png")
DOT_TIMEOUT_S = 120


def render(dot: str, source: str) -> list[Path] | str:
    """The rendered files, or dot's complaint."""
    rendered = []
    for fmt in FORMATS:
        target = OUTPUT_DIR / PurePosixPath(source).with_suffix(f".{fmt}")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run([dot, f"-T{fmt}", "-o", str(target), source], capture_output=True,
                                  text=True, timeout=DOT_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return f"dot took longer than {DOT_TIMEOUT_S} s"
        if done.returncode != 0:
            return done.stderr.strip() or f"dot exited with code {done.returncode}"
        rendered.append(target)
    return rendered


def main() -> int:
    """Render every source; 1 if any could not be rendered."""
    sources: list[str] = env_json(SOURCES_ENV)
    dot = dot_program()
    if dot is None:
        raise JobError(f"Graphviz is not installed on this worker: {INSTALL_HINT}")
    which = "graphviz-pure, installed with Control Room" if is_bundled(dot) else "the host's Graphviz"
    print(f"rendering with {dot} ({which})")
    for skipped in env_json(SKIPPED_ENV):
        print(f"skipped {skipped}: Mermaid can't be rendered offline on this worker")
    failed = 0
    for i, source in enumerate(sources, 1):
        result = render(dot, source)
        if isinstance(result, str):
            print(f"{source}: {result}", file=sys.stderr)
            failed += 1
        else:
            for path in result:
                print(f"rendered {source} -> {path.as_posix()} ({path.stat().st_size} bytes)")
        progress(100 * i / len(sources), f"rendered {i}/{len(sources)}")
    if failed:
        print(f"{failed} of {len(sources)} diagram(s) failed to render", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    run(main)
