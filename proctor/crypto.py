"""Secrets kept on disk, and sealing what the store must not hold in the clear.

An embedding is biometric data: it is stored only sealed with AES-256-GCM under the
server's enrollment key. Each record gets a random 96-bit nonce, and the candidate id
is the associated data, so a ciphertext copied onto another candidate's row fails to
open instead of silently verifying the wrong person.

A webhook's signing secret is sealed the same way (:class:`TextCipher`), bound to its
webhook id, so a copy of the database does not let anyone forge deliveries.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12  # 96 bits: GCM's native nonce size
_KEY_INFO = b"proctor enrollment embedding v1"
WEBHOOK_SECRET_INFO = b"proctor webhook secret v1"
SEALED_TEXT_PREFIX = "sealed:v1:"


class SealError(ValueError):
    """A sealed value did not open: wrong key, wrong record, or altered bytes."""


def load_or_create_secret(configured: str, path: Path) -> bytes:
    """The configured secret, or one generated once and kept at ``path`` (mode 0600).

    Kept on disk so that what it protects (tokens, sealed embeddings) survives a
    restart. Two processes starting together agree on one secret: the file appears
    whole, by a hard link, or not at all.
    """
    if configured:
        return configured.encode()
    if path.exists():
        return _read_secret(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_urlsafe(48).encode())
        with contextlib.suppress(FileExistsError):  # another process won: use theirs
            os.link(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    secret = path.read_bytes().strip()
    if not secret:
        raise ValueError(f"the secret file {path} is empty; delete it to make a new one")
    return secret


@dataclass(frozen=True)
class Sealed:
    ciphertext: bytes  # includes GCM's 16-byte tag
    nonce: bytes


def _aead(secret: bytes, info: bytes) -> AESGCM:
    if not secret:
        raise ValueError("the secret is empty")
    # HKDF turns any configured string (or the generated file) into exactly the 256
    # bits AES wants, and keeps each use's key apart from other uses of the same secret.
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=info).derive(secret))


class EmbeddingCipher:
    """AES-256-GCM over float32 embeddings, bound to the candidate they belong to."""

    def __init__(self, secret: bytes) -> None:
        self._aead = _aead(secret, _KEY_INFO)

    def seal(self, candidate_id: str, embedding: npt.NDArray[np.float32]) -> Sealed:
        nonce = secrets.token_bytes(NONCE_BYTES)
        plain = np.ascontiguousarray(embedding, dtype="<f4").tobytes()
        return Sealed(self._aead.encrypt(nonce, plain, candidate_id.encode()), nonce)

    def open(self, candidate_id: str, sealed: Sealed) -> npt.NDArray[np.float32]:
        try:
            plain = self._aead.decrypt(sealed.nonce, sealed.ciphertext, candidate_id.encode())
        except (InvalidTag, ValueError) as exc:
            raise SealError("the sealed embedding does not open with this key for this "
                            "candidate") from exc
        return np.frombuffer(plain, dtype="<f4").astype(np.float32)


class TextCipher:
    """AES-256-GCM over short text kept in the store, bound to the record (``context``)
    it belongs to. Sealed values read ``sealed:v1:<base64 nonce + ciphertext>``."""

    def __init__(self, secret: bytes, info: bytes) -> None:
        self._aead = _aead(secret, info)

    def seal(self, context: str, plain: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plain.encode(), context.encode())
        return SEALED_TEXT_PREFIX + base64.b64encode(sealed).decode("ascii")

    def open(self, context: str, stored: str) -> str:
        """The plain text. A value that was never sealed (written before sealing
        existed) is returned as it is."""
        if not stored.startswith(SEALED_TEXT_PREFIX):
            return stored
        try:
            raw = base64.b64decode(stored[len(SEALED_TEXT_PREFIX):], validate=True)
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                       context.encode())
        except (InvalidTag, ValueError) as exc:
            raise SealError("the sealed value does not open with this key for this "
                            "record (was the server's secret changed?)") from exc
        return plain.decode()
