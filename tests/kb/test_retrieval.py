"""Chunking, BM25 and the reciprocal-rank fusion, on text and vectors made here."""

from __future__ import annotations

import numpy as np

from proctor.kb.bm25 import Bm25, tokenize
from proctor.kb.chunking import chunk_text, sentences, word_count
from proctor.kb.index import RRF_K, SearchMode, rank
from proctor.store.base import KbChunk

DOC = """Hash tables: collisions

- Explains separate chaining: each bucket keeps a list of entries.
- Explains open addressing (linear probing, quadratic probing or double hashing).

""" + " ".join(f"Sentence number {i} is here." for i in range(40))


def test_chunks_are_exact_pieces_of_the_text_within_the_word_limit() -> None:
    chunks = chunk_text(DOC, 30)
    assert all(piece in DOC for piece in chunks)
    assert all(word_count(piece) <= 30 for piece in chunks)
    # Every word lands in exactly one chunk, in order.
    assert " ".join(" ".join(c.split()) for c in chunks) == " ".join(DOC.split())
    # The heading and both list items fit in one chunk and stay together.
    assert chunks[0].startswith("Hash tables") and "double hashing)." in chunks[0]


def test_a_sentence_longer_than_a_chunk_is_cut_at_words() -> None:
    text = " ".join(f"w{i}" for i in range(95))
    chunks = chunk_text(text, 40)
    assert [word_count(c) for c in chunks] == [40, 40, 15]
    assert chunk_text("   \n\n  ", 40) == []


def test_sentences_are_the_points_of_a_rubric() -> None:
    assert sentences(DOC.split("\n\n")[1]) == [
        "- Explains separate chaining: each bucket keeps a list of entries.",
        "- Explains open addressing (linear probing, quadratic probing or double hashing)."]


def test_bm25_scores_the_chunks_sharing_a_stemmed_word() -> None:
    corpus = [tokenize(t) for t in ("the cache stores responses", "caches and buckets",
                                    "buckets buckets buckets", "nothing related here")]
    scores = Bm25(corpus).scores(tokenize("Which caches?"))
    assert tokenize("Caches, hashing and sorted lists") == ["cache", "hash", "sort", "list"]
    assert scores[0] > 0 and scores[1] > 0 and scores[2] == scores[3] == 0


def _chunk(i: int, text: str) -> KbChunk:
    return KbChunk(chunk_id=f"d:{i}", doc_id="d", seq=i, text=text, vector=b"", kind="rubric")


def test_hybrid_fuses_the_two_rankings_by_reciprocal_rank() -> None:
    texts = ["etag validation answers 304", "unrelated words", "freshness lifetime"]
    chunks = [_chunk(i, t) for i, t in enumerate(texts)]
    # Vectors: chunk 2 nearest the query, then chunk 0, then chunk 1.
    vectors = np.array([[0.6, 0.8], [-1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    query_vector = np.array([1.0, 0.0], dtype=np.float32)
    hits = rank(chunks, vectors, "etag", query_vector, 3)
    # Chunk 0: first by words, second by vector; chunk 2: first by vector only.
    assert [h.chunk.chunk_id for h in hits] == ["d:0", "d:2", "d:1"]
    assert hits[0].fused == 1 / (RRF_K + 1) + 1 / (RRF_K + 2)
    assert hits[1].fused == 1 / (RRF_K + 1) and hits[1].bm25 == 0.0
    assert hits[0].bm25 > 0 and round(hits[0].vector, 3) == 0.6
    assert [h.chunk.chunk_id for h in rank(chunks, vectors, "etag", query_vector, 3,
                                           SearchMode.BM25)] == ["d:0"]
    assert [h.chunk.chunk_id for h in rank(chunks, vectors, "etag", query_vector, 2,
                                           SearchMode.VECTOR)] == ["d:2", "d:0"]
