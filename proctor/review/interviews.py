"""Interviews: questions in, answers scored, the report updated.

``Interviews`` is what the HTTP routes (signaling/interview.py) call: it records the
questions of a session, and scores a finished session's answers against the tenant's
knowledge base (proctor/review/answers.py), the LLM first when one is configured and
the local scorer otherwise or on any LLM failure. Scoring again replaces the last
scores (idempotent), and the stored report is rebuilt with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from proctor.config import ScoringConfig
from proctor.errors import ServiceError
from proctor.flags.model import utc_now_iso
from proctor.kb.index import DocKind, Filters, Hit, KnowledgeBase
from proctor.review import audit
from proctor.review.answers import (
    Answer,
    LocalScorer,
    Scored,
    answer_section,
    answers_from,
    merge_questions,
    related,
    rubric_for,
)
from proctor.review.llm import LlmClient, LlmFailed, LlmVerdict, quote_in
from proctor.review.reports import refresh_report
from proctor.store.base import (
    AnswerScoreRecord,
    QuestionRecord,
    SessionRecord,
    SessionStatus,
    Store,
)

FINISHED = (SessionStatus.ENDED, SessionStatus.INTERRUPTED)


class Interviews:
    def __init__(self, store: Store, kb: KnowledgeBase, config: ScoringConfig) -> None:
        self.store = store
        self.kb = kb
        self.config = config
        self.local = LocalScorer(kb.embedder)
        self.llm = None if config.llm is None else LlmClient(config.llm)

    async def add_questions(self, record: SessionRecord,
                            posted: Sequence[QuestionRecord]) -> list[QuestionRecord]:
        """Store ``posted`` (checked against those stored); the session's questions."""
        merged = merge_questions(await self.store.list_questions(record.session_id), posted)
        await self.store.save_questions(list(posted))
        return merged

    async def score(self, record: SessionRecord, actor: str,
                    question_ids: Sequence[str] | None = None,
                    filters: Filters | None = None) -> dict[str, Any]:
        """Score the answers of a finished session (409 while live or with no questions;
        400 for a question id it does not have) and rebuild its report."""
        if record.status not in FINISHED:
            raise ServiceError(409, "not_ended", "answers are scored once the session ended")
        questions = await self.store.list_questions(record.session_id)
        if not questions:
            raise ServiceError(409, "no_questions",
                               "no questions were posted for this session")
        wanted = _pick(questions, question_ids)
        filters = filters or Filters()
        answers = answers_from(questions, await self.store.list_transcript(record.session_id))
        scored = [await self._score_one(record.tenant, a, filters) for a in answers
                  if a.question.question_id in wanted]
        now = utc_now_iso()
        fresh = {s.answer.question.question_id: AnswerScoreRecord(
            record.session_id, s.answer.question.question_id, s.score, s.scorer,
            s.to_dict(), now) for s in scored}
        # A subset rescored keeps the other answers' last scores.
        kept = [r for r in await self.store.list_answer_scores(record.session_id)
                if r.question_id not in fresh and r.question_id in {q.question_id
                                                                    for q in questions}]
        await self.store.replace_answer_scores(record.session_id, [*kept, *fresh.values()])
        report = await refresh_report(self.store, record, self.config) or {}
        section = answer_section([*kept, *fresh.values()]) or {}
        await audit.record(self.store, "answers_scored", actor, record,
                           final_score=section.get("final_score"), answers=len(scored))
        transcript = report.get("transcript") or {}
        return {"session_id": record.session_id, **section,
                "transcript_complete": bool(transcript.get("complete", True)),
                "recommendation": report.get("recommendation")}

    async def _score_one(self, tenant: str, answer: Answer, filters: Filters) -> Scored:
        question = answer.question.text
        question_vector = (await self.kb.embedder.embed([question]))[0]
        k = self.config.answers.retrieve_k
        rubric_hits = await self.kb.search(tenant, question, _kind(filters, DocKind.RUBRIC),
                                           k, query_vector=question_vector)
        rubric = rubric_for(question_vector, rubric_hits)
        reference = related(question_vector, await self.kb.search(
            tenant, f"{question} {answer.text}", _kind(filters, DocKind.REFERENCE), k))
        fallback, dropped = None, 0
        if self.llm is not None and answer.words > 0:
            try:
                verdict = await self.llm.judge(question, answer.text, [*rubric, *reference])
            except LlmFailed as exc:
                fallback = f"the LLM gave no valid answer ({exc})"[:300]
            else:
                if verdict.claims:
                    return _from_llm(answer, verdict, [*rubric, *reference], self.llm.name)
                dropped = verdict.dropped
                fallback = "no claim of the LLM cited a retrieved chunk"
        local = await self.local.score(answer, rubric, reference)
        local.fallback, local.dropped_claims = fallback, dropped
        return local


def _pick(questions: Sequence[QuestionRecord], ids: Sequence[str] | None) -> set[str]:
    known = {q.question_id for q in questions}
    if ids is None:
        return known
    unknown = sorted(set(ids) - known)
    if unknown:
        raise ServiceError(400, "unknown_question", f"no such questions: {unknown}")
    return set(ids)


def _kind(filters: Filters, kind: DocKind) -> Filters:
    return Filters(kind=kind, role=filters.role, level=filters.level, topic=filters.topic)


def _from_llm(answer: Answer, verdict: LlmVerdict, hits: Sequence[Hit],
              scorer: str) -> Scored:
    by_id = {h.chunk.chunk_id: h for h in hits}
    citations: list[dict[str, str]] = []
    for claim in verdict.claims:
        for chunk_id in claim.chunk_ids:
            hit = by_id[chunk_id]
            citation = {"doc_id": hit.chunk.doc_id, "chunk_id": chunk_id,
                        "quote": quote_in(claim, hit)}
            if citation not in citations:
                citations.append(citation)
    criteria = [{"name": c.name, "score": round(c.score, 1), "reason": c.reason}
                for c in verdict.claims]
    score = sum(c.score for c in verdict.claims) / len(verdict.claims)
    return Scored(answer, round(score, 1), criteria, citations, scorer=scorer,
                  dropped_claims=verdict.dropped)
