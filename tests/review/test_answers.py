"""Answer scoring: answers cut from the transcript by question times, the local scorer
with the real MiniLM model, and the question / score routes through the real app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from proctor.errors import ServiceError
from proctor.flags.model import new_id
from proctor.flags.scoring import Recommendation, with_answer_score
from proctor.kb.embeddings import shared_embedder
from proctor.kb.index import DocKind, Filters, KnowledgeBase
from proctor.review.answers import Answer, LocalScorer, answers_from, merge_questions, rubric_for
from proctor.store import Store, open_store_from_url
from proctor.store.base import QuestionRecord, TranscriptSegment
from signaling.keys import STORE_KEY
from tests.review import interview_kb as kb
from tests.signaling.test_tenants import add_key, status_of

API = "/api/v1"


def _q(qid: str, at: float, text: str = "Q?") -> QuestionRecord:
    return QuestionRecord("s1", qid, text, at)


def _segment(start: float, end: float, text: str, session_id: str = "s1") -> TranscriptSegment:
    return TranscriptSegment(new_id(), session_id, start, end, text, 0.9, "en",
                             "2026-01-01T00:00:00Z")


def test_an_answer_is_the_speech_between_its_question_and_the_next() -> None:
    segments = [_segment(0.0, 1.0, "before any question"), _segment(2.0, 4.0, "one"),
                _segment(9.0, 11.5, "straddles, mostly after q2"), _segment(12.0, 13.0, "two")]
    answers = answers_from([_q("q2", 10.0), _q("q1", 1.5), _q("q3", 30.0)], segments)
    assert [(a.question.question_id, a.text) for a in answers] == [
        ("q1", "one"), ("q2", "straddles, mostly after q2 two"), ("q3", "")]
    assert (answers[1].start, answers[1].end, answers[2].start) == (9.0, 13.0, None)


@pytest.mark.parametrize(("existing", "posted", "code"), [
    ([], [_q("a", 1.0), _q("a", 2.0)], "duplicate_question"),
    ([], [_q("a", 5.0), _q("b", 2.0)], "questions_out_of_order"),
    ([], [_q("a", 5.0), _q("b", 5.0)], "questions_out_of_order"),
    ([_q("a", 5.0)], [_q("b", 4.0)], "questions_out_of_order"),
])
def test_questions_must_be_distinct_and_in_time_order(
        existing: list[QuestionRecord], posted: list[QuestionRecord], code: str) -> None:
    with pytest.raises(ServiceError) as refused:
        merge_questions(existing, posted)
    assert (refused.value.status, refused.value.code) == (400, code)


def test_reposting_a_question_replaces_it() -> None:
    merged = merge_questions([_q("a", 1.0), _q("b", 5.0)], [_q("b", 6.0, "new"), _q("c", 9.0)])
    assert [(q.question_id, q.asked_at, q.text) for q in merged] == [
        ("a", 1.0, "Q?"), ("b", 6.0, "new"), ("c", 9.0, "Q?")]


def test_pass_needs_the_answer_score_once_answers_were_scored() -> None:
    assert with_answer_score(Recommendation.PASS, None, 7.0) == Recommendation.PASS
    assert with_answer_score(Recommendation.PASS, 7.0, 7.0) == Recommendation.PASS
    assert with_answer_score(Recommendation.PASS, 6.99, 7.0) == Recommendation.REVIEW
    assert with_answer_score(Recommendation.FAIL, 10.0, 7.0) == Recommendation.FAIL


@pytest.fixture
async def knowledge(tmp_path: Path) -> AsyncIterator[tuple[KnowledgeBase, dict[str, str]]]:
    store: Store = open_store_from_url(f"sqlite:///{tmp_path}/kb.db")
    await store.open()
    base = KnowledgeBase(store, shared_embedder(), 80, 262_144)
    ids = {}
    for name, kind, text in (("hash", DocKind.RUBRIC, kb.HASH_RUBRIC),
                             ("cache", DocKind.RUBRIC, kb.CACHE_RUBRIC),
                             ("notes", DocKind.REFERENCE, kb.HASH_REFERENCE)):
        document, _ = await base.add("acme", kind, text, title=name)
        ids[name] = document.doc_id
    yield base, ids
    await store.close()


async def _local(base: KnowledgeBase, text: str) -> Any:
    question = kb.HASH_QUESTION
    vector = (await base.embedder.embed([question]))[0]
    rubric = rubric_for(vector, await base.search("acme", question, Filters(DocKind.RUBRIC), 4,
                                                  query_vector=vector))
    reference = await base.search("acme", f"{question} {text}", Filters(DocKind.REFERENCE), 4)
    answer = Answer(QuestionRecord("s1", "q1", question, 1.0), text, 1.0, 20.0)
    return await LocalScorer(base.embedder).score(answer, rubric, reference)


async def test_the_local_scorer_ranks_good_partial_and_off_topic_answers(
        knowledge: tuple[KnowledgeBase, dict[str, str]]) -> None:
    base, ids = knowledge
    good = await _local(base, kb.GOOD_HASH_ANSWER)
    partial = await _local(base, kb.PARTIAL_HASH_ANSWER)
    off = await _local(base, kb.OFF_TOPIC_ANSWER)
    assert good.score >= 8.0 and off.score <= 2.0 and good.score > partial.score > off.score
    names = {c["name"] for c in good.criteria}
    assert names == {"relevance", "coverage", "reference", "length"}
    # Citations name the hash-table rubric (not the caching one) and quote it word for word.
    rubric_cites = [c for c in good.citations if c["doc_id"] == ids["hash"]]
    assert len(rubric_cites) >= 3 and all(c["quote"] in kb.HASH_RUBRIC for c in rubric_cites)
    assert ids["cache"] not in {c["doc_id"] for c in good.citations}
    assert any(c["doc_id"] == ids["notes"] for c in good.citations)
    coverage = next(c for c in partial.criteria if c["name"] == "coverage")
    assert "missing" in coverage["reason"]


async def test_silence_scores_zero(knowledge: tuple[KnowledgeBase, dict[str, str]]) -> None:
    base, _ = knowledge
    silent = await _local(base, "")
    assert silent.score == 0.0 and silent.citations == []


# -- through the app -----------------------------------------------------------------

async def _session(client: TestClient, headers: dict[str, str]) -> str:
    created = await status_of(await client.post(
        f"{API}/sessions", json={"candidate_id": "c1"}, headers=headers), 201)
    return str(created["session_id"])


async def _add_kb(client: TestClient, headers: dict[str, str]) -> dict[str, str]:
    ids = {}
    for name, kind, text in (("hash", "rubric", kb.HASH_RUBRIC),
                             ("cache", "rubric", kb.CACHE_RUBRIC),
                             ("notes", "reference", kb.HASH_REFERENCE)):
        added = await status_of(await client.post(
            f"{API}/kb", json={"kind": kind, "text": text, "title": name}, headers=headers), 201)
        ids[name] = added["doc_id"]
    return ids


QUESTIONS = [{"question_id": "hash", "text": kb.HASH_QUESTION, "asked_at": 1.0},
             {"question_id": "cache", "text": kb.CACHE_QUESTION, "asked_at": 20.0},
             {"question_id": "hash-again", "text": kb.HASH_QUESTION, "asked_at": 40.0}]


async def test_a_finished_session_is_scored_into_its_report(
        client: TestClient, api_headers: dict[str, str]) -> None:
    ids = await _add_kb(client, api_headers)
    sid = await _session(client, api_headers)
    posted = await status_of(await client.post(f"{API}/sessions/{sid}/questions",
                                               json={"questions": QUESTIONS},
                                               headers=api_headers), 200)
    assert [q["question_id"] for q in posted["questions"]] == ["hash", "cache", "hash-again"]
    live = await client.post(f"{API}/sessions/{sid}/score", headers=api_headers)
    assert (await status_of(live, 409))["error"]["code"] == "not_ended"
    await status_of(await client.post(f"{API}/sessions/{sid}/end", headers=api_headers), 200)
    # What the transcription would have stored: a good answer, another, one off topic.
    store = client.app[STORE_KEY]
    for start, text in ((3.0, kb.GOOD_HASH_ANSWER), (22.0, kb.GOOD_CACHE_ANSWER),
                        (42.0, kb.OFF_TOPIC_ANSWER)):
        await store.add_transcript_segment(_segment(start, start + 12.0, text, sid))
    first = await status_of(await client.post(f"{API}/sessions/{sid}/score",
                                              headers=api_headers), 200)
    scores = {a["question_id"]: a["score"] for a in first["answers"]}
    assert scores["hash"] >= 7.0 and scores["cache"] >= 7.0 and scores["hash-again"] <= 2.0
    cited = {a["question_id"]: {c["doc_id"] for c in a["citations"]} for a in first["answers"]}
    assert ids["hash"] in cited["hash"] and ids["cache"] in cited["cache"]
    assert first["final_score"] == round(sum(scores.values()) / 3, 2) < 7.0
    assert first["scorer"] == "local" and first["dropped_claims"] == 0
    # Idempotent: the same scores again, stored once, and the report carries them.
    again = await status_of(await client.post(f"{API}/sessions/{sid}/score", json={},
                                              headers=api_headers), 200)
    assert again["answers"] == first["answers"]
    report = await status_of(await client.get(f"{API}/sessions/{sid}/report",
                                              headers=api_headers), 200)
    assert report["answer_scoring"]["answers"] == first["answers"]
    # No flag at all, but the answers average under 7: REVIEW, not PASS.
    assert report["flags"] == [] and report["recommendation"] == "REVIEW"
    # Rescoring one answer, now with a better one, lifts the final score to a PASS.
    await store.add_transcript_segment(_segment(55.0, 67.0, kb.GOOD_HASH_ANSWER, sid))
    rescored = await status_of(await client.post(
        f"{API}/sessions/{sid}/score", json={"question_ids": ["hash-again"]},
        headers=api_headers), 200)
    assert rescored["final_score"] >= 7.0 and rescored["recommendation"] == "PASS"


async def test_bad_questions_and_scoring_requests_are_refused(
        client: TestClient, api_headers: dict[str, str]) -> None:
    sid = await _session(client, api_headers)
    path = f"{API}/sessions/{sid}"

    async def refused(route: str, body: Any, status: int) -> str:
        response = await client.post(f"{path}/{route}", json=body, headers=api_headers)
        return str((await status_of(response, status))["error"]["code"])

    q = {"question_id": "a", "text": "Why?", "asked_at": 5.0}
    assert await refused("questions", {"questions": [q, {**q, "asked_at": 9.0}]}, 400) == \
        "duplicate_question"
    assert await refused("questions", {"questions": [q, {**q, "question_id": "b",
                                                         "asked_at": 2.0}]}, 400) == \
        "questions_out_of_order"
    for bad in ({"questions": []}, {"questions": [{**q, "asked_at": -1}]},
                {"questions": [{**q, "asked_at": "soon"}]}, {"questions": [{**q, "text": ""}]},
                {"questions": [{**q, "question_id": None}]}, {"nothing": 1}):
        assert await refused("questions", bad, 400) == "bad_request", bad
    await client.post(f"{path}/end", headers=api_headers)
    assert await refused("score", {}, 409) == "no_questions"
    await status_of(await client.post(f"{path}/questions", json={"questions": [q]},
                                      headers=api_headers), 200)
    assert await refused("questions", {"questions": [{**q, "question_id": "early",
                                                      "asked_at": 1.0}]}, 400) == \
        "questions_out_of_order"
    assert await refused("score", {"question_ids": ["a", "zzz"]}, 400) == "unknown_question"
    assert await refused("score", {"question_ids": "a"}, 400) == "bad_request"


async def test_another_tenants_session_is_not_found(client: TestClient,
                                                    api_headers: dict[str, str]) -> None:
    sid = await _session(client, api_headers)
    other = await add_key(client, "globex-key", "globex")
    body = {"questions": [{"question_id": "a", "text": "Why?", "asked_at": 1.0}]}
    for route, payload in (("questions", body), ("score", {})):
        response = await client.post(f"{API}/sessions/{sid}/{route}", json=payload,
                                     headers=other)
        assert (await status_of(response, 404))["error"]["code"] == "not_found"
    listed = await client.get(f"{API}/sessions/{sid}/questions", headers=other)
    assert listed.status == 404
    assert await client.app[STORE_KEY].list_questions(sid) == []
