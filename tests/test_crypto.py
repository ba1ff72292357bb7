"""Sealed embeddings (AES-256-GCM bound to the candidate) and secrets kept on disk."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import numpy as np
import pytest

from proctor.crypto import NONCE_BYTES, EmbeddingCipher, Sealed, SealError, load_or_create_secret


def _embedding() -> np.ndarray:
    vector = np.random.default_rng(1).normal(size=128).astype(np.float32)
    return vector / np.linalg.norm(vector)


def test_seal_and_open_round_trip() -> None:
    cipher = EmbeddingCipher(b"secret")
    embedding = _embedding()
    sealed = cipher.seal("alice", embedding)
    assert len(sealed.nonce) == NONCE_BYTES
    assert len(sealed.ciphertext) == embedding.nbytes + 16  # GCM tag
    assert embedding.tobytes() not in sealed.ciphertext
    opened = cipher.open("alice", sealed)
    assert opened.dtype == np.float32 and np.array_equal(opened, embedding)


def test_every_seal_has_its_own_nonce() -> None:
    cipher = EmbeddingCipher(b"secret")
    embedding = _embedding()
    first, second = cipher.seal("alice", embedding), cipher.seal("alice", embedding)
    assert first.nonce != second.nonce and first.ciphertext != second.ciphertext


def test_opens_only_for_its_candidate_its_key_and_its_bytes() -> None:
    sealed = EmbeddingCipher(b"secret").seal("alice", _embedding())
    with pytest.raises(SealError):
        EmbeddingCipher(b"secret").open("bob", sealed)  # moved to another candidate
    with pytest.raises(SealError):
        EmbeddingCipher(b"another secret").open("alice", sealed)
    tampered = bytearray(sealed.ciphertext)
    tampered[0] ^= 1
    with pytest.raises(SealError):
        EmbeddingCipher(b"secret").open("alice", Sealed(bytes(tampered), sealed.nonce))
    with pytest.raises(SealError):
        EmbeddingCipher(b"secret").open("alice", Sealed(sealed.ciphertext, b"short"))


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        EmbeddingCipher(b"")


def test_secret_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "data" / "enrollment_key"
    first = load_or_create_secret("", path)
    assert len(first) >= 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret("", path) == first
    assert load_or_create_secret("configured", path) == b"configured"
    assert [p.name for p in path.parent.iterdir()] == ["enrollment_key"]  # no leftovers


def test_concurrent_first_use_agrees_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "enrollment_key"
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(load_or_create_secret("", path)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and results[0] == path.read_bytes()


def test_empty_secret_file_is_an_error_not_a_weak_key(tmp_path: Path) -> None:
    path = tmp_path / "enrollment_key"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_or_create_secret("", path)
