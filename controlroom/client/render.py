"""How a watched run is shown: a progress bar and log lines, plain lines for CI logs, or JSON."""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO

import msgspec

from controlroom.client.sse import Message

_decode = msgspec.json.Decoder(dict[str, Any])


class Renderer(Protocol):
    """Receives what happens to a run, in order."""

    def event(self, message: Message) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


def describe(event: dict[str, Any]) -> str:
    """A one-line account of a non-log event."""
    d, kind = event.get("data") or {}, event.get("type")
    if kind == "submitted":
        return f"queued ({event.get('job_type')}, job {d.get('job_name')})"
    if kind == "started":
        return f"running (attempt {d.get('attempt')})"
    if kind == "failed":
        what = f"attempt failed: {d.get('reason')}" if d.get("retrying") else f"failed: {d.get('reason')}"
        return f"{what}: {d.get('message') or ''}".rstrip(": ")
    if kind == "retry_scheduled":
        return f"retry scheduled: attempt {d.get('attempt')} not before {d.get('not_before')}"
    if kind == "completed":
        return f"completed{': ' + d['summary'] if d.get('summary') else ''}"
    if kind == "cancel_requested":
        return f"cancellation requested by {d.get('by')}"
    if kind == "cancelled":
        return f"cancelled: {d.get('reason')}"
    if kind == "progress":
        percent = d.get("percent")
        return f"[{'   ' if percent is None else f'{percent:3.0f}'}%] {d.get('message') or ''}"
    if kind == "artifact":
        return f"artifact {d.get('path')} ({d.get('size')} bytes) {d.get('url')}"
    if kind == "lineage":
        return f"lineage {d.get('source')} -> {d.get('target')}"
    return f"{kind}: {msgspec.json.encode(d).decode()}"


class JsonLines:
    """One JSON object per line on stdout: every run event, then the `end` event."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out

    def event(self, message: Message) -> None:
        """Print the event's data as it came."""
        print(message.data, file=self.out, flush=True)

    def note(self, text: str) -> None:
        """Notes go to stderr: stdout stays machine-readable."""
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Nothing to tear down."""


class PlainLines:
    """Line by line, for CI logs: status changes and progress as lines, log text as printed."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out

    def event(self, message: Message) -> None:
        """Print one event."""
        event = _decode.decode(message.data)
        if message.event == "log":
            text = str(event["data"].get("text", ""))
            print(text, file=self.out, end="" if text.endswith("\n") else "\n", flush=True)
        elif message.event == "end":
            print(f"run {event['run_id']} {event['status']}", file=self.out, flush=True)
        else:
            print(describe(event), file=self.out, flush=True)

    def note(self, text: str) -> None:
        """A remark of the client's own (reconnecting, timed out)."""
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Nothing to tear down."""


class ProgressBar:
    """A rich progress bar for the run, with its log lines and status changes printed above."""

    def __init__(self, run_id: str) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TaskProgressColumn(), TextColumn("{task.fields[message]}"))
        self.task = self.progress.add_task(f"run {run_id[:8]}", total=100, message="")
        self.progress.start()

    def event(self, message: Message) -> None:
        """Move the bar, or print a line above it."""
        from rich.text import Text

        event = _decode.decode(message.data)
        data = event.get("data") or {}
        if message.event == "progress":
            self.progress.update(self.task, completed=data.get("percent") or 0,
                                 message=data.get("message") or "")
        elif message.event == "log":
            self.progress.console.print(Text(str(data.get("text", "")).rstrip("\n")))
        elif message.event == "end":
            if event.get("status") == "completed":
                self.progress.update(self.task, completed=100)
            self.progress.console.print(Text(f"run {event['run_id']} {event['status']}",
                                             style="bold"))
        else:
            if event.get("type") == "started":
                self.progress.update(self.task, completed=0, message="")
            self.progress.console.print(Text(describe(event), style="cyan"))

    def note(self, text: str) -> None:
        """A remark of the client's own."""
        from rich.text import Text

        self.progress.console.print(Text(text, style="yellow"))

    def close(self) -> None:
        """Stop redrawing the bar."""
        self.progress.stop()


def renderer(run_id: str, *, as_json: bool, out: TextIO = sys.stdout) -> Renderer:
    """JSON lines when asked, a progress bar on a terminal, plain lines otherwise."""
    if as_json:
        return JsonLines(out)
    if out.isatty():
        return ProgressBar(run_id)
    return PlainLines(out)
