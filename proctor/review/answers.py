"""Interview answers: which speech answers which question, and how well.

The integrator tells us when each question was asked (media seconds, like a flag's
``start``); the answer to a question is the transcript between it and the next one
(a segment belongs to the question its midpoint follows). Each answer is scored 0–10
against the tenant's knowledge base:

* retrieval (proctor/kb/index.py) finds the rubric chunks for the question and the
  reference chunks for the question and answer;
* the local scorer (default, no network) measures, with MiniLM sentence embeddings,
  how many rubric points the answer covers, how well it agrees with the reference,
  whether it is on the question at all, and whether it is long enough to judge;
* an LLM (``scoring.llm``, proctor/review/llm.py) may score instead; a claim of its
  that cites no retrieved chunk is dropped and counted, and any failure (timeout,
  refusal, malformed output) falls back to the local scorer.

Scores are stored per answer (replacing the last scoring: idempotent) and the report
carries them with ``final_score`` (the mean; an unanswered question counts 0), which
the PASS rule then needs at ``scoring.answers.pass_score`` or more.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from proctor.errors import ServiceError
from proctor.kb.chunking import plain, sentences, word_count
from proctor.kb.embeddings import Embedder
from proctor.kb.index import Hit
from proctor.store.base import AnswerScoreRecord, QuestionRecord, TranscriptSegment

LOCAL = "local"
# Cosine similarities (MiniLM, unit vectors) mapped onto 0-1 between these two points:
# unrelated English sentences sit around 0-0.2, a paraphrase of a point 0.5-0.8.
RELEVANCE_SPAN = (0.15, 0.55)
COVERAGE_SPAN = (0.25, 0.60)
AGREEMENT_SPAN = (0.25, 0.60)
COVERED_AT = 0.45  # a rubric point counts as covered from this best similarity up
RELATED_AT = 0.25  # a retrieved chunk this far from the question is no rubric for it
LENGTH_SPAN = (5, 30)  # words: under 5 nothing to judge, 30 or more enough
MIN_POINT_WORDS = 4  # shorter rubric lines (headings) are not points
WEIGHTS = {"coverage": 0.45, "relevance": 0.25, "reference": 0.20, "length": 0.10}
QUOTE_CHARS = 300


@dataclass(frozen=True)
class Answer:
    question: QuestionRecord
    text: str
    start: float | None  # media seconds of its first and last speech, None when silent
    end: float | None

    @property
    def words(self) -> int:
        return word_count(self.text)


@dataclass
class Scored:
    """One answer's score in the API's shape (see :meth:`to_dict`)."""

    answer: Answer
    score: float
    criteria: list[dict[str, Any]]
    citations: list[dict[str, str]]
    scorer: str = LOCAL
    fallback: str | None = None  # why the LLM's score was not used
    dropped_claims: int = 0  # LLM claims that cited no retrieved chunk
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        a = self.answer
        return {"question_id": a.question.question_id, "question": a.question.text,
                "asked_at": round(a.question.asked_at, 3), "answer": a.text,
                "answer_start": None if a.start is None else round(a.start, 2),
                "answer_end": None if a.end is None else round(a.end, 2),
                "words": a.words, "score": round(self.score, 1), "criteria": self.criteria,
                "citations": self.citations, "scorer": self.scorer,
                "fallback": self.fallback, "dropped_claims": self.dropped_claims}


# -- questions and answers -----------------------------------------------------------

def merge_questions(existing: Sequence[QuestionRecord],
                    posted: Sequence[QuestionRecord]) -> list[QuestionRecord]:
    """The session's questions after ``posted``; ServiceError 400 for duplicate ids in
    one post or a question out of time order (each must come after the one before it,
    in the post and after those already stored; re-posting a stored id replaces it)."""
    ids = [q.question_id for q in posted]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ServiceError(400, "duplicate_question", f"question ids repeat: {duplicates}")
    for before, after in itertools.pairwise(posted):
        if after.asked_at <= before.asked_at:
            raise ServiceError(400, "questions_out_of_order",
                               f"question {after.question_id!r} (asked_at {after.asked_at}) "
                               f"is not after {before.question_id!r} ({before.asked_at})")
    kept = [q for q in existing if q.question_id not in set(ids)]
    if kept and posted and posted[0].asked_at <= max(q.asked_at for q in kept):
        last = max(kept, key=lambda q: q.asked_at)
        raise ServiceError(400, "questions_out_of_order",
                           f"question {posted[0].question_id!r} (asked_at "
                           f"{posted[0].asked_at}) is not after the stored question "
                           f"{last.question_id!r} ({last.asked_at})")
    return sorted([*kept, *posted], key=lambda q: q.asked_at)


def answers_from(questions: Sequence[QuestionRecord],
                 segments: Iterable[TranscriptSegment]) -> list[Answer]:
    """Each question's answer: the segments whose midpoint lies between it and the next
    question (speech before the first question answers nothing)."""
    ordered = sorted(questions, key=lambda q: q.asked_at)
    bounds = [q.asked_at for q in ordered] + [math.inf]
    parts: list[list[TranscriptSegment]] = [[] for _ in ordered]
    for segment in sorted(segments, key=lambda s: (s.start, s.end)):
        middle = (segment.start + segment.end) / 2
        for i in range(len(ordered)):
            if bounds[i] <= middle < bounds[i + 1]:
                parts[i].append(segment)
                break
    return [Answer(q, " ".join(s.text.strip() for s in part if s.text.strip()),
                   part[0].start if part else None, part[-1].end if part else None)
            for q, part in zip(ordered, parts, strict=True)]


# -- the local scorer ----------------------------------------------------------------

def _ramp(value: float, span: tuple[float, float]) -> float:
    low, high = span
    return float(min(1.0, max(0.0, (value - low) / (high - low))))


def _quote(text: str) -> str:
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS].rsplit(" ", 1)[0]


def _citation(hit: Hit, quote: str) -> dict[str, str]:
    return {"doc_id": hit.chunk.doc_id, "chunk_id": hit.chunk.chunk_id, "quote": _quote(quote)}


@dataclass(frozen=True)
class _Point:
    hit: Hit
    text: str  # as it stands in the chunk (the quote)


def _points(hits: Sequence[Hit]) -> list[_Point]:
    return [_Point(h, s) for h in hits for s in sentences(h.chunk.text)
            if word_count(plain(s)) >= MIN_POINT_WORDS]


def related(question_vector: npt.NDArray[np.float32], hits: Sequence[Hit]) -> list[Hit]:
    """The hits about the question at all: a knowledge base with nothing on it scores
    the answer without a rubric (or reference), rather than against another topic's."""
    return [h for h in hits if float(h.vector_array @ question_vector) >= RELATED_AT]


def rubric_for(question_vector: npt.NDArray[np.float32], hits: Sequence[Hit]) -> list[Hit]:
    """The retrieved rubric chunks of the best rubric document about the question."""
    related_hits = related(question_vector, hits)
    if not related_hits:
        return []
    best_doc = related_hits[0].chunk.doc_id
    return [h for h in related_hits if h.chunk.doc_id == best_doc]


class LocalScorer:
    """Rubric coverage, reference agreement, relevance and length, from embeddings."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    async def score(self, answer: Answer, rubric: Sequence[Hit],
                    reference: Sequence[Hit]) -> Scored:
        said = [plain(s) for s in sentences(answer.text)]
        said = [s for s in said if s]
        if answer.words == 0 or not said:
            return _unanswered(answer)
        points, facts = _points(rubric), _points(reference)
        texts = [answer.question.text, answer.text, *said,
                 *(plain(p.text) for p in points), *(plain(f.text) for f in facts)]
        vectors = await self.embedder.embed(texts)
        question, whole = vectors[0], vectors[1]
        mine = np.vstack([whole, vectors[2:2 + len(said)]])  # the whole answer and each sentence
        rest = vectors[2 + len(said):]
        criteria: dict[str, tuple[float, str]] = {}
        citations: list[dict[str, str]] = []
        relevance = float(question @ whole)
        criteria["relevance"] = (_ramp(relevance, RELEVANCE_SPAN),
                                 f"similarity to the question {relevance:.2f}")
        if points:
            criteria["coverage"], cited = _coverage(points, rest[:len(points)], mine)
            citations += cited
        if facts:
            criteria["reference"], cited = _agreement(facts, rest[len(points):], mine)
            citations += cited
        words = answer.words
        criteria["length"] = (_ramp(words, LENGTH_SPAN), f"{words} words")
        total = sum(WEIGHTS[n] * s for n, (s, _) in criteria.items()) / sum(
            WEIGHTS[n] for n in criteria)
        # Off the question, nothing else counts: a long, fluent answer to another
        # question must not pass for a weak answer to this one.
        gate = min(1.0, 2.0 * criteria["relevance"][0])
        return Scored(answer, round(10.0 * total * gate, 1),
                      [{"name": n, "score": round(10.0 * s, 1), "reason": r}
                       for n, (s, r) in criteria.items()], _unique(citations))


def _coverage(points: Sequence[_Point], vectors: npt.NDArray[np.float32],
              mine: npt.NDArray[np.float32]) -> tuple[tuple[float, str], list[dict[str, str]]]:
    best = (vectors @ mine.T).max(axis=1)
    covered = [i for i in range(len(points)) if best[i] >= COVERED_AT]
    missing = [points[i].text for i in range(len(points)) if best[i] < COVERED_AT]
    value = float(np.mean([_ramp(float(b), COVERAGE_SPAN) for b in best]))
    reason = f"covers {len(covered)} of {len(points)} rubric points"
    if missing:
        reason += f"; missing: {'; '.join(plain(m) for m in missing[:3])}"
    # Cite what was covered, or the nearest point when nothing was (the rubric used).
    cited = covered or [int(np.argmax(best))]
    return (value, reason), [_citation(points[i].hit, points[i].text) for i in cited]


def _agreement(facts: Sequence[_Point], vectors: npt.NDArray[np.float32],
               mine: npt.NDArray[np.float32]) -> tuple[tuple[float, str], list[dict[str, str]]]:
    similarity = mine[1:] @ vectors.T if len(mine) > 1 else mine @ vectors.T
    per_sentence = similarity.max(axis=1)
    top = np.sort(per_sentence)[::-1][:3]  # the answer's three best-supported sentences
    value = float(np.mean([_ramp(float(v), AGREEMENT_SPAN) for v in top]))
    i, j = np.unravel_index(int(np.argmax(similarity)), similarity.shape)
    fact = facts[int(j)]
    reason = f"closest reference agreement {float(similarity[i, j]):.2f}"
    return (value, reason), [_citation(fact.hit, fact.text)]


def _unique(citations: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for c in citations:
        key = (c["chunk_id"], c["quote"])
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _unanswered(answer: Answer) -> Scored:
    reason = "no answer was heard between this question and the next"
    return Scored(answer, 0.0, [{"name": n, "score": 0.0, "reason": reason}
                                for n in ("relevance", "length")], [])


# -- the report ----------------------------------------------------------------------

def answer_section(records: Sequence[AnswerScoreRecord]) -> dict[str, Any] | None:
    """The report's ``answer_scoring``: every answer (in question order), the mean as
    ``final_score`` and the LLM claims dropped; None when nothing was scored."""
    if not records:
        return None
    ordered = sorted(records, key=lambda r: (float(r.result.get("asked_at", 0.0)),
                                             r.question_id))
    scorers = sorted({r.scorer for r in records})
    return {"final_score": round(sum(r.score for r in records) / len(records), 2),
            "answers": [r.result for r in ordered],
            "scorer": scorers[0] if len(scorers) == 1 else "mixed",
            "dropped_claims": sum(int(r.result.get("dropped_claims", 0)) for r in records),
            "fallbacks": sum(1 for r in records if r.result.get("fallback")),
            "scored_at": max(r.created_at for r in records)}
