"""Adding documents and searching them: hybrid retrieval, in process, per tenant.

A search reads the tenant's chunks that pass the filters from the store (text and
vector blobs), ranks them twice — BM25 on words, cosine similarity of MiniLM vectors —
and fuses the two rankings by reciprocal rank (RRF, k = 60: Cormack et al. 2009):
``fused = Σ 1 / (k + rank)`` over the rankings a chunk appears in. Words catch exact
terms (a library's name, an error code); vectors catch paraphrase; RRF needs no
calibration between their scales. Everything runs in this process, on SQLite and
PostgreSQL alike: each search scans the tenant's chunks that pass the filters, which
suits a knowledge base of rubrics and reference notes (hundreds to a few thousand
chunks).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from proctor.errors import ServiceError
from proctor.flags.model import utc_now_iso
from proctor.kb.bm25 import Bm25, tokenize
from proctor.kb.chunking import chunk_text, word_count
from proctor.kb.embeddings import Embedder, from_bytes, to_bytes
from proctor.store.base import KbChunk, KbDocument, Store

RRF_K = 60
POOL = 50  # each ranking contributes its top POOL chunks to the fusion
MAX_LIMIT = 50


class DocKind(StrEnum):
    RUBRIC = "rubric"  # what a good answer covers: the points scored against
    REFERENCE = "reference"  # facts a good answer agrees with


class SearchMode(StrEnum):
    HYBRID = "hybrid"
    BM25 = "bm25"
    VECTOR = "vector"


@dataclass(frozen=True)
class Filters:
    """Which documents a search reads (None: any). role, level and topic keep the
    documents with that value and the general ones that leave it unset."""

    kind: DocKind | None = None
    role: str | None = None
    level: str | None = None
    topic: str | None = None


@dataclass(frozen=True)
class Hit:
    chunk: KbChunk
    bm25: float
    vector: float  # cosine similarity, -1..1
    fused: float
    vector_array: npt.NDArray[np.float32]  # the chunk's embedding (for the scorer)

    def to_dict(self) -> dict[str, Any]:
        c = self.chunk
        return {"doc_id": c.doc_id, "chunk_id": c.chunk_id, "kind": c.kind, "title": c.title,
                "text": c.text, "role": c.role, "level": c.level, "topic": c.topic,
                "scores": {"bm25": round(self.bm25, 4), "vector": round(self.vector, 4),
                           "fused": round(self.fused, 6)}}


def rank(chunks: Sequence[KbChunk], vectors: npt.NDArray[np.float32], query: str,
         query_vector: npt.NDArray[np.float32], limit: int,
         mode: SearchMode = SearchMode.HYBRID) -> list[Hit]:
    """The best ``limit`` chunks for ``query`` (pure: no store, no model)."""
    if not chunks:
        return []
    bm25 = Bm25([tokenize(c.text) for c in chunks]).scores(tokenize(query))
    cosine = vectors @ query_vector
    # Only chunks sharing a word with the query are in the BM25 ranking.
    by_words = [int(i) for i in np.argsort(-bm25, kind="stable") if bm25[i] > 0][:POOL]
    by_vector = [int(i) for i in np.argsort(-cosine, kind="stable")][:POOL]
    fused = np.zeros(len(chunks), dtype=np.float64)
    for ranking in (by_words, by_vector):
        for position, index in enumerate(ranking, start=1):
            fused[index] += 1.0 / (RRF_K + position)
    if mode == SearchMode.BM25:
        order = by_words
    elif mode == SearchMode.VECTOR:
        order = by_vector
    else:
        order = sorted((i for i in range(len(chunks)) if fused[i] > 0),
                       key=lambda i: (-fused[i], -cosine[i], i))
    return [Hit(chunks[i], float(bm25[i]), float(cosine[i]), float(fused[i]), vectors[i])
            for i in order[:limit]]


class KnowledgeBase:
    """A tenant's documents in the store, chunked and embedded; hybrid search over them."""

    def __init__(self, store: Store, embedder: Embedder, chunk_words: int,
                 max_document_bytes: int) -> None:
        self.store = store
        self.embedder = embedder
        self.chunk_words = chunk_words
        self.max_document_bytes = max_document_bytes

    async def add(self, tenant: str, kind: DocKind, text: str, title: str = "",
                  role: str | None = None, level: str | None = None,
                  topic: str | None = None) -> tuple[KbDocument, list[KbChunk]]:
        """Chunk, embed and store a document (400 when empty, 413 when over the cap)."""
        size = len(text.encode("utf-8"))
        if size > self.max_document_bytes:
            raise ServiceError(413, "too_large", f"the document is {size} bytes; the limit "
                               f"is {self.max_document_bytes} (scoring.answers.max_document_bytes)")
        pieces = [p for p in chunk_text(text, self.chunk_words) if word_count(p) > 0]
        if not pieces:
            raise ServiceError(400, "empty_document", "the document has no text")
        vectors = await self.embedder.embed(pieces)
        doc_id = str(uuid.uuid4())
        document = KbDocument(doc_id=doc_id, tenant=tenant, kind=str(kind), text=text,
                              title=title, role=role, level=level, topic=topic,
                              model=self.embedder.model_id, created_at=utc_now_iso())
        chunks = [KbChunk(chunk_id=f"{doc_id}:{seq}", doc_id=doc_id, seq=seq, text=piece,
                          vector=to_bytes(vectors[seq]), tenant=tenant, kind=str(kind),
                          title=title, role=role, level=level, topic=topic)
                  for seq, piece in enumerate(pieces)]
        await self.store.add_kb_document(document, chunks)
        return document, chunks

    async def search(self, tenant: str, query: str, filters: Filters | None = None,
                     limit: int = 5, mode: SearchMode = SearchMode.HYBRID,
                     query_vector: npt.NDArray[np.float32] | None = None) -> list[Hit]:
        filters = filters or Filters()
        chunks = await self.store.list_kb_chunks(
            tenant, kind=None if filters.kind is None else str(filters.kind),
            role=filters.role, level=filters.level, topic=filters.topic)
        if not chunks or not query.strip():
            return []
        if query_vector is None:
            query_vector = (await self.embedder.embed([query]))[0]
        vectors = from_bytes([c.vector for c in chunks])
        return rank(chunks, vectors, query, query_vector, min(limit, MAX_LIMIT), mode)
