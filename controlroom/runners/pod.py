"""Runs a job's command inside a Kubernetes pod, then uploads what it left in `output/`.

    python -m controlroom.runners.pod --code /controlroom/code -- python -u main.py

A pod's filesystem goes with the pod, so the runner keeps the outputs itself: it copies the
code (a read-only ConfigMap volume) into the working dir, creates `output/`, runs the command,
then posts every regular file under `output/` to `POST /api/v1/artifacts` with the run token
(`CONTROLROOM_URL`, `CONTROLROOM_RUN_ID`, `CONTROLROOM_TOKEN`) and exits with the command's
code. The pod log has one stream: the command's stderr lines are written to stdout marked
`::stderr `, so the worker tells them apart. SIGTERM (the Job deleted: cancel, timeout,
shutdown) is passed on to the command; its outputs are then not uploaded.
"""

from __future__ import annotations

import argparse
import mimetypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

from controlroom.sdk import ENV_OUTPUT_DIR, ENV_RUN_ID, ENV_TOKEN, ENV_URL

STDERR_MARK = "::stderr "
MAX_OUTPUT_FILES = 1000
UPLOAD_TIMEOUT_S = 300.0
UPLOAD_TRIES = 3
BACKOFF_S = 1.0


def main(argv: list[str] | None = None) -> int:
    """Copy the code in, run the command, upload the outputs; the command's exit code."""
    parser = argparse.ArgumentParser(prog="controlroom.runners.pod")
    parser.add_argument("--code", type=Path, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    shutil.copytree(args.code, Path.cwd(), dirs_exist_ok=True,
                    ignore=lambda _dir, names: [n for n in names if n.startswith("..")])
    output = Path(os.environ.get(ENV_OUTPUT_DIR) or "output").absolute()
    output.mkdir(parents=True, exist_ok=True)
    code, stopped = run(command)
    if not stopped:
        upload_outputs(output)
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says


def run(command: list[str]) -> tuple[int, bool]:
    """The command's exit code, and whether it was stopped by a SIGTERM passed on to it."""
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stopped = threading.Event()

    def forward(signum: int, _frame: object) -> None:
        stopped.set()
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    assert proc.stderr is not None
    relay = threading.Thread(target=_relay_stderr, args=(proc.stderr,), daemon=True)
    relay.start()
    code = proc.wait()
    relay.join(timeout=5)
    return code, stopped.is_set()


def _relay_stderr(stream: Iterable[bytes]) -> None:
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        sys.stdout.write(f"{STDERR_MARK}{line}\n")
        sys.stdout.flush()


def outputs(root: Path) -> Iterator[tuple[str, Path]]:
    """(path relative to `root`, file) for each regular file under `root`; symlinks skipped."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(root).as_posix(), path


def upload_outputs(root: Path) -> None:
    """Post each output file as an artifact of this run; a file that fails is noted, not fatal."""
    if not all(os.environ.get(k) for k in (ENV_URL, ENV_RUN_ID, ENV_TOKEN)):
        _note("outputs not uploaded: no Control Room URL, run id or token in the environment")
        return
    for n, (rel, path) in enumerate(outputs(root)):
        if n >= MAX_OUTPUT_FILES:
            _note(f"output/{rel} and later files not uploaded: more than {MAX_OUTPUT_FILES} files")
            return
        try:
            upload(rel, path)
        except (OSError, urllib.error.URLError) as e:
            _note(f"output/{rel} not uploaded: {getattr(e, 'reason', None) or e}")


def upload(rel: str, path: Path) -> None:
    """One file, streamed, retried on 5xx, 429 and connection errors."""
    query = urllib.parse.urlencode({"run_id": os.environ[ENV_RUN_ID], "path": rel})
    url = f"{os.environ[ENV_URL].rstrip('/')}/api/v1/artifacts?{query}"
    kind = mimetypes.guess_type(rel)[0] or "application/octet-stream"
    for attempt in range(1, UPLOAD_TRIES + 1):
        with path.open("rb") as body:
            request = urllib.request.Request(url, data=body, method="POST", headers={
                "Authorization": f"Bearer {os.environ[ENV_TOKEN]}", "Content-Type": kind,
                "Content-Length": str(path.stat().st_size), "User-Agent": "controlroom-pod"})
            try:
                with urllib.request.urlopen(request, timeout=UPLOAD_TIMEOUT_S):
                    return
            except urllib.error.HTTPError as e:
                if (e.code != 429 and e.code < 500) or attempt == UPLOAD_TRIES:
                    raise OSError(f"{e.code} {e.read()[:500].decode(errors='replace')}") from None
            except (urllib.error.URLError, OSError):
                if attempt == UPLOAD_TRIES:
                    raise
        time.sleep(BACKOFF_S * 2 ** (attempt - 1))


def _note(text: str) -> None:
    sys.stdout.write(f"{STDERR_MARK}controlroom: {text}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
