"""Server-sent events, parsed line by line as the HTML standard describes."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Message:
    """One dispatched event: its type (`message` when unnamed), id, data and retry hint."""

    event: str
    data: str
    id: str | None = None
    retry: int | None = None


@dataclass
class Parser:
    """Feed it lines; it returns a Message at each blank line that ends one."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None
    _retry: int | None = None

    def feed(self, line: str) -> Message | None:
        """Take one line (without its line break)."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment: heartbeats
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> Message | None:
        data, event, retry = self._data, self._event, self._retry
        self._data, self._event, self._retry = [], "", None
        if not data:
            return None
        return Message(event or "message", "\n".join(data), self._id, retry)


async def messages(lines: AsyncIterable[str]) -> AsyncIterator[Message]:
    """The messages in a stream of lines."""
    parser = Parser()
    async for line in lines:
        message = parser.feed(line)
        if message is not None:
            yield message
