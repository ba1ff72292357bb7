"""Enrollments: a candidate's face embedding, sealed for the store and opened for a session.

The key comes from ``detectors.identity.enrollment_key`` or, when that is empty, from
``<data_dir>/enrollment_key`` (made once, mode 0600). Losing that file makes every
stored enrollment unreadable: sessions then run without identity checks (logged), and
candidates must enroll again.
"""

from __future__ import annotations

import logging
from typing import Any

from proctor.config import Config
from proctor.crypto import EmbeddingCipher, Sealed, SealError, load_or_create_secret
from proctor.detectors.identity import EMBEDDING_MODEL, Embedding
from proctor.flags.model import utc_now_iso
from proctor.store.base import DEFAULT_TENANT, EnrollmentRecord, Store

log = logging.getLogger("proctor.enrollment")

ENROLLMENT_KEY_FILE = "enrollment_key"


def enrollment_cipher(config: Config) -> EmbeddingCipher:
    secret = load_or_create_secret(config.detectors.identity.enrollment_key,
                                   config.data_dir / ENROLLMENT_KEY_FILE)
    return EmbeddingCipher(secret)


def seal_enrollment(cipher: EmbeddingCipher, candidate_id: str, embedding: Embedding,
                    quality: dict[str, Any],
                    tenant: str = DEFAULT_TENANT) -> EnrollmentRecord:
    sealed = cipher.seal(candidate_id, embedding)
    return EnrollmentRecord(candidate_id=candidate_id, ciphertext=sealed.ciphertext,
                            nonce=sealed.nonce, model=EMBEDDING_MODEL,
                            created_at=utc_now_iso(), quality=quality, tenant=tenant)


def open_enrollment(cipher: EmbeddingCipher, record: EnrollmentRecord) -> Embedding:
    """The embedding; SealError when the key or the candidate is not the one it was
    sealed for."""
    return cipher.open(record.candidate_id, Sealed(record.ciphertext, record.nonce))


async def load_enrollment(store: Store, config: Config, candidate_id: str,
                          tenant: str = DEFAULT_TENANT) -> Embedding | None:
    """The candidate's embedding for a session, or None (not enrolled, or unusable).

    An enrollment that cannot be used never stops a session: it runs without identity
    checks, and the log says why.
    """
    record = await store.get_enrollment(candidate_id, tenant)
    if record is None:
        return None
    if record.model != EMBEDDING_MODEL:
        log.warning("candidate %s enrolled with model %s, this server uses %s: no identity "
                    "checks until they enroll again", candidate_id, record.model,
                    EMBEDDING_MODEL)
        return None
    try:
        return open_enrollment(enrollment_cipher(config), record)
    except SealError:
        log.error("candidate %s: the enrollment does not open with this server's "
                  "enrollment key (key changed or lost?): no identity checks", candidate_id)
        return None
