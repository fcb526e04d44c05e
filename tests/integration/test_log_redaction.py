"""No log line carries a URL's query string or userinfo: callback tokens stay out of logs."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator

import pytest

from controlroom.adapters.webhooks.delivery import HttpWebhookSender
from controlroom.adapters.webhooks.ssrf import CallbackGuard
from controlroom.cli.log_setup import configure, redact_urls
from tests.webhook_receiver import Receiver


@pytest.fixture
def process_log() -> Iterator[io.StringIO]:
    """The process's logging as the CLI sets it up, writing to a buffer; restored afterwards."""
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", "httpx", "httpcore")}
    stream = io.StringIO()
    handler = configure(stream=stream, verbose=True)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def test_a_delivered_callback_never_logs_its_query_token(
        process_log: io.StringIO, receiver: Receiver) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    sender = HttpWebhookSender(CallbackGuard("127.0.0.1"), timeout_s=2)
    try:
        ok = sender.send(f"{receiver.url()}?token={canary}", "msg_1", b"{}", [])
        closed = sender.send(f"http://user:{canary}@127.0.0.1:9/hook?sig={canary}", "msg_2", b"{}", [])
    finally:
        sender.close()
    assert ok.status_code == 200 and receiver.received[0].path.endswith(canary)  # it was sent
    log = logging.getLogger("controlroom.webhooks")
    log.warning("delivery to %s failed: %s", f"http://127.0.0.1:9/hook?sig={canary}", closed.error)
    try:
        raise ConnectionError(f"could not reach https://u:{canary}@hooks.example.com/x?t={canary}")
    except ConnectionError:
        log.exception("delivery failed")
    text = process_log.getvalue()
    assert "delivery failed" in text and "hooks.example.com/x?[redacted]" in text
    assert canary not in text, text


def test_httpx_request_lines_are_quiet_even_when_verbose(process_log: io.StringIO) -> None:
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() >= logging.WARNING


@pytest.mark.parametrize(("line", "shown"), [
    ("POST https://hooks.example.com/a/b?token=s3cret HTTP/1.1",
     "POST https://hooks.example.com/a/b?[redacted] HTTP/1.1"),
    ("to http://alice:pw@10.0.0.1:8080/x#frag", "to http://10.0.0.1:8080/x"),
    ("url='https://h.example/p?x=1&y=2'", "url='https://h.example/p?[redacted]'"),
    ("no url here: a?b=c", "no url here: a?b=c"),
    ("https://example.com/plain", "https://example.com/plain"),
])
def test_redact_urls(line: str, shown: str) -> None:
    assert redact_urls(line) == shown
