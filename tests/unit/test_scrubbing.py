"""The scrubber finds a secret in the encodings a job would use to sneak it out."""

from __future__ import annotations

import base64
import re
import time
import urllib.parse
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlroom.commands.execution.scrubbing import REDACTED, Scrubber

secrets = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF), min_size=8, max_size=64)
ENCODINGS: dict[str, Callable[[bytes], str]] = {
    "hex": lambda b: b.hex(),
    "HEX": lambda b: b.hex().upper(),
    "base64": lambda b: base64.b64encode(b).decode(),
    "base64 unpadded": lambda b: base64.b64encode(b).decode().rstrip("="),
    "urlsafe base64": lambda b: base64.urlsafe_b64encode(b).decode(),
    "urlsafe base64 unpadded": lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
    "percent": lambda b: urllib.parse.quote(b, safe=""),
    "percent plus": lambda b: urllib.parse.quote_plus(b),
    "percent every byte": lambda b: "".join(f"%{x:02x}" for x in b),
    "reversed": lambda b: b.decode()[::-1],
}
_B64_RUN = re.compile(r"[A-Za-z0-9+/_\-]{4,}")


def b64_leaks(text: str, secret: bytes) -> bool:
    """True if any base64 run left in `text`, read at any alignment, decodes to the secret."""
    for run in _B64_RUN.findall(text):
        for shift in range(4):
            part = run[shift:]
            part = part[: len(part) // 4 * 4].replace("-", "+").replace("_", "/")
            try:
                if secret in base64.b64decode(part):
                    return True
            except ValueError:
                continue
    return False


@pytest.mark.parametrize("name", ENCODINGS)
@given(secret=secrets, before=st.text(max_size=20), after=st.text(max_size=20))
def test_an_encoded_secret_is_redacted_whole(name: str, secret: str, before: str, after: str) -> None:
    encoded = ENCODINGS[name](secret.encode())
    scrubbed = Scrubber([secret])(f"{before} {encoded} {after}")
    assert encoded not in scrubbed and REDACTED in scrubbed


@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
@given(secret=secrets, before=st.binary(max_size=40), after=st.binary(max_size=40))
def test_a_secret_inside_a_longer_base64_stream_is_redacted_at_any_alignment(
        encode: Callable[[bytes], bytes], secret: str, before: bytes, after: bytes) -> None:
    raw = secret.encode()
    stream = encode(before + raw + after).decode()
    scrubbed = Scrubber([secret])(stream)
    assert REDACTED in scrubbed
    assert not b64_leaks(scrubbed, raw)


def test_canaries_in_every_form_are_gone() -> None:
    canary = "CANARY-7f3a9c0e-secret/value+1="
    raw = canary.encode()
    forms = [enc(raw) for enc in ENCODINGS.values()]
    forms += [base64.b64encode(prefix + raw + b"!").decode() for prefix in (b"", b"x", b"xy")]
    text = "\n".join(f"leak {i}: {form}" for i, form in enumerate(forms))
    scrubbed = Scrubber([canary])(text)
    assert all(form not in scrubbed for form in forms), scrubbed
    assert scrubbed.count(REDACTED) >= len(forms)


def test_ordinary_output_is_left_alone() -> None:
    text = "rows=1200 sha=0123456789abcdef path=/data/in%20put.csv b64=aGVsbG8gd29ybGQ=\n"
    assert Scrubber(["correct-horse-battery", "tr0ub4dor&3"])(text) == text


def test_it_stays_fast_on_a_megabyte_of_output() -> None:
    pem = "-----BEGIN KEY-----\n" + base64.b64encode(bytes(range(256)) * 12).decode() + "\n-----END"
    scrub = Scrubber([pem, "db-password-123", "tok_abcdefghijklmnop"])
    text = "an ordinary log line: 0123456789abcdef ==== %20 +++ aGVsbG8=\n" * 16_000
    started = time.perf_counter()
    assert scrub(text) == text
    assert time.perf_counter() - started < 2.0  # ~0.1 s here; generous for a loaded machine
