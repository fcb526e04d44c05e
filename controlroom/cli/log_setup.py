"""The process's logging: one handler whose filter keeps secrets in URLs out of every line.

Callback and webhook URLs may carry tokens in their query string or userinfo
(`https://user:pass@host/hook?token=…`). Whatever logs them — our code, httpx, a library's
exception — the line keeps scheme, host and path only. httpx and httpcore are also quieted
to WARNING: their per-request INFO lines are the usual way such a URL reaches a log.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET = ("httpx", "httpcore")
_URL = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)"
    r"(?:[^\s/?#@\"'<>]*@)?"  # userinfo: dropped
    r"(?P<rest>[^\s?#\"'<>]*)"  # host and path: kept
    r"(?P<query>\?[^\s#\"'<>]*)?(?:#[^\s\"'<>]*)?"  # query and fragment: replaced
)


def redact_urls(text: str) -> str:
    """`text` with every URL's userinfo removed and its query and fragment replaced."""
    return _URL.sub(lambda m: m["scheme"] + m["rest"] + ("?[redacted]" if m["query"] else ""), text)


class RedactUrls(logging.Filter):
    """Rewrites a record's message (and its traceback) with URLs redacted; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; True: the record is always emitted."""
        message = record.getMessage()
        redacted = redact_urls(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_urls(record.exc_text)
        return True


def configure(*, verbose: bool = False, stream: TextIO | None = None) -> logging.Handler:
    """Log to `stream` (stderr) through the redacting filter; returns the handler installed."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactUrls())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in QUIET:  # even -v: their DEBUG/INFO lines print whole request URLs
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler
