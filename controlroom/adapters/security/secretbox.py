"""AES-GCM sealing of submitted secrets: the log only ever holds ciphertext."""

from __future__ import annotations

import base64
import hashlib
import os

import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
_decode = msgspec.json.Decoder(dict[str, str])


class AesGcmSecretBox:
    """Seals a name→value map with a key derived from the server's secret key."""

    def __init__(self, key: str) -> None:
        self._aead = AESGCM(hashlib.sha256(b"controlroom-secrets:" + key.encode()).digest())

    def seal(self, secrets: dict[str, str]) -> str:
        """Ciphertext (base64) of the secrets."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, msgspec.json.encode(secrets), None)
        return base64.b64encode(nonce + sealed).decode()

    def unseal(self, sealed: str) -> dict[str, str]:
        """The secrets behind `sealed`."""
        raw = base64.b64decode(sealed)
        return _decode.decode(self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], None))
