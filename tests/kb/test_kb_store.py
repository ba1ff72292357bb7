"""The knowledge base, questions and answer scores in the Store, on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np

from proctor.kb.embeddings import DIMENSION, from_bytes, to_bytes
from proctor.store import Store
from proctor.store.base import AnswerScoreRecord, KbChunk, KbDocument, QuestionRecord
from tests.store.factories import session


def _doc(doc_id: str, tenant: str = "acme", kind: str = "rubric", role: str | None = None,
         at: str = "2026-01-01T00:00:01.000000Z") -> KbDocument:
    return KbDocument(doc_id=doc_id, tenant=tenant, kind=kind, text=f"text of {doc_id} ✓",
                      title=f"title {doc_id}", role=role, model="m", created_at=at)


def _chunks(doc: KbDocument, n: int = 2) -> list[KbChunk]:
    rng = np.random.default_rng(len(doc.doc_id))
    return [KbChunk(chunk_id=f"{doc.doc_id}:{i}", doc_id=doc.doc_id, seq=i,
                    text=f"chunk {i} of {doc.doc_id}",
                    vector=to_bytes(rng.standard_normal(DIMENSION).astype(np.float32)),
                    tenant=doc.tenant) for i in range(n)]


async def test_documents_and_chunks_round_trip_with_their_vectors(store: Store) -> None:
    doc = _doc("d1", role="backend")
    chunks = _chunks(doc, 3)
    await store.add_kb_document(doc, chunks)
    assert await store.get_kb_document("d1", "acme") == doc
    read = await store.list_kb_chunks("acme")
    assert [c.chunk_id for c in read] == ["d1:0", "d1:1", "d1:2"]
    # The blob comes back bit for bit, and with the document's fields.
    np.testing.assert_array_equal(from_bytes([c.vector for c in read]),
                                  from_bytes([c.vector for c in chunks]))
    assert {(c.kind, c.title, c.role, c.tenant) for c in read} == {
        ("rubric", "title d1", "backend", "acme")}


async def test_tenants_never_see_each_others_documents(store: Store) -> None:
    mine, theirs = _doc("d1"), _doc("d2", tenant="globex")
    await store.add_kb_document(mine, _chunks(mine))
    await store.add_kb_document(theirs, _chunks(theirs))
    assert await store.get_kb_document("d2", "acme") is None
    assert {c.doc_id for c in await store.list_kb_chunks("acme")} == {"d1"}
    assert [d.doc_id for d in await store.list_kb_documents("globex")] == ["d2"]
    assert not await store.delete_kb_document("d2", "acme")  # not theirs to delete
    assert await store.delete_kb_document("d2", "globex")
    assert await store.list_kb_chunks("globex") == []  # chunks went with their document


async def test_filters_keep_matching_and_general_documents(store: Store) -> None:
    docs = [_doc("general", at="2026-01-01T00:00:01.000000Z"),
            _doc("backend", role="backend", at="2026-01-01T00:00:02.000000Z"),
            _doc("frontend", role="frontend", at="2026-01-01T00:00:03.000000Z"),
            _doc("notes", kind="reference", role="backend", at="2026-01-01T00:00:04.000000Z")]
    for doc in docs:
        await store.add_kb_document(doc, _chunks(doc, 1))

    async def ids(**filters: str) -> list[str]:
        return [c.doc_id for c in await store.list_kb_chunks("acme", **filters)]

    assert await ids(role="backend") == ["general", "backend", "notes"]
    assert await ids(role="backend", kind="rubric") == ["general", "backend"]
    assert await ids(kind="reference") == ["notes"]
    assert await ids(role="ops", kind="rubric") == ["general"]
    assert await ids() == ["general", "backend", "frontend", "notes"]
    assert [d.doc_id for d in await store.list_kb_documents("acme", limit=2)] == [
        "notes", "frontend"]


async def test_questions_upsert_by_id_and_read_in_time_order(store: Store) -> None:
    await store.create_session(session("s1"))
    first = QuestionRecord("s1", "q1", "First?", 12.5, "2026-01-01T00:00:00Z")
    second = QuestionRecord("s1", "q2", "Second?", 3.0, "2026-01-01T00:00:00Z")
    await store.save_questions([first, second])
    assert await store.list_questions("s1") == [second, first]
    moved = QuestionRecord("s1", "q2", "Second, reworded?", 20.0, "2026-01-01T00:01:00Z")
    await store.save_questions([moved])
    assert await store.list_questions("s1") == [first, moved]
    assert await store.list_questions("nobody") == []


async def test_answer_scores_are_replaced_whole_and_go_with_the_session(store: Store) -> None:
    await store.create_session(session("s1"))
    await store.save_questions([QuestionRecord("s1", "q1", "Q?", 1.0, "t")])

    def score(qid: str, value: float) -> AnswerScoreRecord:
        return AnswerScoreRecord("s1", qid, value, "local",
                                 {"question_id": qid, "score": value, "nested": [1, None]},
                                 "2026-01-01T00:00:00Z")

    await store.replace_answer_scores("s1", [score("q1", 4.0), score("q2", 8.5)])
    await store.replace_answer_scores("s1", [score("q1", 6.0)])
    assert await store.list_answer_scores("s1") == [score("q1", 6.0)]
    await store.delete_session("s1")
    assert await store.list_answer_scores("s1") == []
    assert await store.list_questions("s1") == []
