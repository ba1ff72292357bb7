"""Interviews: the knowledge base, questions and answer scores, on both backends.

The knowledge base is per tenant: every query here filters on ``tenant``, so one
tenant's documents never reach another's search or scoring. Chunks keep their vectors
as blobs; the BM25 and vector search run in process (proctor/kb/index.py), so this
module only reads the candidate chunks, and neither dialect needs an extension.
"""

from __future__ import annotations

from typing import Any

from proctor.store.base import AnswerScoreRecord, KbChunk, KbDocument, QuestionRecord
from proctor.store.sql_base import Row, SqlBase, dump, load_dict

_DOC_COLUMNS = "doc_id, tenant, kind, role, level, topic, title, text, model, created_at"
_CHUNK_COLUMNS = "chunk_id, doc_id, tenant, seq, text, vector"
_QUESTION_COLUMNS = "session_id, question_id, text, asked_at, created_at"
_SCORE_COLUMNS = "session_id, question_id, score, scorer, result, created_at"
# What a read of chunks carries from its document (for filters and hits).
_CHUNK_READ = ("c.chunk_id, c.doc_id, c.tenant, c.seq, c.text, c.vector, d.kind, d.title, "
               "d.role, d.level, d.topic")


def _insert(table: str, columns: str) -> str:
    return (f"INSERT INTO {table} ({columns}) "
            f"VALUES ({', '.join('?' for _ in columns.split(', '))})")


_QUESTION_UPSERT = (
    _insert("interview_questions", _QUESTION_COLUMNS)
    + " ON CONFLICT (session_id, question_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _QUESTION_COLUMNS.split(", ")[2:])
)


class KbQueries(SqlBase):
    """Mixed into :class:`~proctor.store.sql.SqlStore`."""

    # -- documents and chunks ------------------------------------------------------

    async def add_kb_document(self, document: KbDocument, chunks: list[KbChunk]) -> None:
        d = document
        async with self._transaction() as conn:
            await conn.execute(_insert("kb_documents", _DOC_COLUMNS),
                               (d.doc_id, d.tenant, d.kind, d.role, d.level, d.topic, d.title,
                                d.text, d.model, d.created_at))
            for c in chunks:
                await conn.execute(_insert("kb_chunks", _CHUNK_COLUMNS),
                                   (c.chunk_id, d.doc_id, d.tenant, int(c.seq), c.text,
                                    bytes(c.vector)))

    async def get_kb_document(self, doc_id: str, tenant: str) -> KbDocument | None:
        row = await self._fetch_one(
            f"SELECT {_DOC_COLUMNS} FROM kb_documents WHERE doc_id = ? AND tenant = ?",
            (doc_id, tenant))
        return None if row is None else document_from_row(row)

    async def list_kb_documents(self, tenant: str, limit: int = 100) -> list[KbDocument]:
        if limit < 0:
            raise ValueError(f"limit must be zero or more, got {limit}")
        rows = await self._fetch_all(
            f"SELECT {_DOC_COLUMNS} FROM kb_documents WHERE tenant = ? "
            "ORDER BY created_at DESC, doc_id DESC LIMIT ?", (tenant, limit))
        return [document_from_row(row) for row in rows]

    async def delete_kb_document(self, doc_id: str, tenant: str) -> bool:
        deleted = await self._fetch_all(
            "DELETE FROM kb_documents WHERE doc_id = ? AND tenant = ? RETURNING doc_id",
            (doc_id, tenant))
        return bool(deleted)

    async def list_kb_chunks(self, tenant: str, kind: str | None = None,
                             role: str | None = None, level: str | None = None,
                             topic: str | None = None) -> list[KbChunk]:
        where, params = ["c.tenant = ?"], [tenant]
        if kind is not None:
            where.append("d.kind = ?")
            params.append(kind)
        # Column names come from this literal list, never from the caller.
        for column, value in (("role", role), ("level", level), ("topic", topic)):
            if value is not None:
                where.append(f"(d.{column} = ? OR d.{column} IS NULL)")
                params.append(value)
        rows = await self._fetch_all(
            f"SELECT {_CHUNK_READ} FROM kb_chunks c JOIN kb_documents d ON d.doc_id = c.doc_id "
            f"WHERE {' AND '.join(where)} ORDER BY d.created_at, c.doc_id, c.seq", params)
        return [chunk_from_row(row) for row in rows]

    # -- questions -----------------------------------------------------------------

    async def save_questions(self, records: list[QuestionRecord]) -> None:
        async with self._transaction() as conn:
            for q in records:
                await conn.execute(_QUESTION_UPSERT, (q.session_id, q.question_id, q.text,
                                                      float(q.asked_at), q.created_at))

    async def list_questions(self, session_id: str) -> list[QuestionRecord]:
        rows = await self._fetch_all(
            f"SELECT {_QUESTION_COLUMNS} FROM interview_questions WHERE session_id = ? "
            "ORDER BY asked_at, question_id", (session_id,))
        return [question_from_row(row) for row in rows]

    # -- answer scores -------------------------------------------------------------

    async def replace_answer_scores(self, session_id: str,
                                    records: list[AnswerScoreRecord]) -> None:
        async with self._transaction() as conn:
            await conn.execute("DELETE FROM answer_scores WHERE session_id = ?", (session_id,))
            for r in records:
                if r.session_id != session_id:
                    raise ValueError(f"answer score of session {r.session_id!r} given for "
                                     f"{session_id!r}")
                await conn.execute(_insert("answer_scores", _SCORE_COLUMNS),
                                   (r.session_id, r.question_id, float(r.score), r.scorer,
                                    dump(r.result), r.created_at))

    async def list_answer_scores(self, session_id: str) -> list[AnswerScoreRecord]:
        rows = await self._fetch_all(
            f"SELECT {_SCORE_COLUMNS} FROM answer_scores WHERE session_id = ? "
            "ORDER BY question_id", (session_id,))
        return [score_from_row(row) for row in rows]


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def document_from_row(row: Row) -> KbDocument:
    return KbDocument(doc_id=row["doc_id"], tenant=row["tenant"], kind=row["kind"],
                      text=row["text"], title=row["title"], role=_opt_str(row["role"]),
                      level=_opt_str(row["level"]), topic=_opt_str(row["topic"]),
                      model=row["model"], created_at=row["created_at"])


def chunk_from_row(row: Row) -> KbChunk:
    return KbChunk(chunk_id=row["chunk_id"], doc_id=row["doc_id"], seq=int(row["seq"]),
                   text=row["text"], vector=bytes(row["vector"]), tenant=row["tenant"],
                   kind=row["kind"], title=row["title"], role=_opt_str(row["role"]),
                   level=_opt_str(row["level"]), topic=_opt_str(row["topic"]))


def question_from_row(row: Row) -> QuestionRecord:
    return QuestionRecord(session_id=row["session_id"], question_id=row["question_id"],
                          text=row["text"], asked_at=float(row["asked_at"]),
                          created_at=row["created_at"])


def score_from_row(row: Row) -> AnswerScoreRecord:
    return AnswerScoreRecord(session_id=row["session_id"], question_id=row["question_id"],
                             score=float(row["score"]), scorer=row["scorer"],
                             result=load_dict(row["result"]), created_at=row["created_at"])
