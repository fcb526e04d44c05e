"""Scrubbing known secret values out of job output before it is recorded.

A job that wants to leak a secret rarely prints it as is. Besides the exact value, each
secret is looked for as the common encodings give it: reversed, hex (lower or upper case),
percent-encoded (any mix of literal and `%XX` bytes, either case, `+` for a space) and
base64 (standard and URL-safe alphabets, with or without padding). A secret inside a longer
base64 stream is found too: at each of the three byte alignments it could sit at, the
characters that depend on its bytes alone are fixed, whatever surrounds it.

Every form of every secret goes into one compiled regex; the literal forms share a trie, so
a position of the output is tried once per character, not once per form.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import TypeAlias

REDACTED = "***"
MIN_SECRET_CHARS = 4
"""Shorter values would redact ordinary words; they're too weak to be worth hiding anyway."""
MIN_EMBEDDED_BASE64 = 8
"""A secret's base64 core inside a longer stream is only looked for from this many characters:
shorter ones would match unrelated base64 (and text) too often."""
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _base64_forms(raw: bytes) -> set[str]:
    """The secret's base64, alone (padded or not) and as the fixed core at each alignment."""
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        forms |= {whole, whole.rstrip("=")}
        for offset in range(3):  # how many bytes of the surrounding stream come before it
            text = encode(b"\0" * offset + raw).decode().rstrip("=")
            start = -(-offset * 8 // 6)  # the first character made of the secret's bits only
            end = (offset + len(raw)) * 8 // 6  # the last one not mixed with what follows
            if end - start >= MIN_EMBEDDED_BASE64:
                forms.add(text[start:end])
    return forms


def literal_forms(secret: str) -> set[str]:
    """Every literal string the secret is redacted as: itself, reversed, hex and base64."""
    raw = secret.encode()
    return {secret, secret[::-1], raw.hex(), raw.hex().upper(), *_base64_forms(raw)}


def _hex_digit(d: str) -> str:
    return f"[{d}{d.upper()}]" if d.isalpha() else d


def percent_pattern(secret: str) -> str:
    """A regex for the secret percent-encoded: each byte literal (if it may be) or `%XX`."""
    parts = []
    for byte in secret.encode():
        escaped = "%" + "".join(_hex_digit(d) for d in f"{byte:02x}")
        choices = [escaped]
        if byte < 0x80 and chr(byte).isprintable():
            choices.append(re.escape(chr(byte)))
        if byte == 0x20:
            choices.append(r"\+")
        parts.append(f"(?:{'|'.join(choices)})" if len(choices) > 1 else escaped)
    return "".join(parts)


_Trie: TypeAlias = dict[str, "_Trie"]
"""A character to the rest of the words after it; the key "" marks a word's end."""


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex matching any of `words`, longest first, built as a trie (shared prefixes)."""
    trie: _Trie = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def pattern(node: _Trie) -> str:
        chain = []
        while "" not in node and len(node) == 1:  # a run of single letters: no group, no recursion
            (char, node), = node.items()
            chain.append(re.escape(char))
        branches = [re.escape(c) + pattern(child) for c, child in sorted(node.items()) if c]
        if not branches:
            return "".join(chain)
        body = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
        if "" in node:  # a word ends here, a longer one may go on: try the longer first (greedy)
            body = f"(?:{body})?"
        return "".join(chain) + body

    return pattern(trie)


@lru_cache(maxsize=256)
def _compiled(secrets: tuple[str, ...]) -> re.Pattern[str]:
    """The one regex for these secrets; cached: a run's event batches share its secrets."""
    literals = set().union(*(literal_forms(s) for s in secrets))
    longest_first = sorted(secrets, key=len, reverse=True)  # a secret whole, not just its prefix
    alternatives = [*(percent_pattern(s) for s in longest_first), _trie_pattern(literals)]
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


class Scrubber:
    """Replaces known secret values, and their common encodings, in job output."""

    def __init__(self, values: Iterable[str]) -> None:
        secrets = tuple(sorted({v for v in values if len(v) >= MIN_SECRET_CHARS}))
        self._pattern = _compiled(secrets) if secrets else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern else text
