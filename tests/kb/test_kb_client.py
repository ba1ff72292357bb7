"""The integrator client's interview calls against the real app over HTTP."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient

from proctor.client import ProctorClient, ProctorError
from tests.conftest import API_KEY
from tests.review import interview_kb as kb

AppClient = TestClient[web.Request, web.Application]


async def test_questions_knowledge_base_and_scoring_through_the_client(
        client: AppClient) -> None:
    async with ProctorClient(str(client.make_url("")), API_KEY) as proctor:
        added = await proctor.add_kb_document("rubric", kb.HASH_RUBRIC, title="hash",
                                              role="backend")
        hits = await proctor.search_kb("keys that collide", role="backend", limit=2)
        assert hits[0]["doc_id"] == added["doc_id"] and hits[0]["scores"]["fused"] > 0
        assert await proctor.search_kb("keys that collide", kind="reference") == []
        session = await proctor.create_session("c1")
        sid = session["session_id"]
        questions = await proctor.post_questions(
            sid, [{"question_id": "q1", "text": kb.HASH_QUESTION, "asked_at": 2.0}])
        assert questions == [{"question_id": "q1", "text": kb.HASH_QUESTION, "asked_at": 2.0}]
        try:
            await proctor.score_answers(sid)
            raise AssertionError("a live session was scored")
        except ProctorError as refused:
            assert (refused.status, refused.code) == (409, "not_ended")
        await proctor.end_session(sid)
        scored = await proctor.score_answers(sid, question_ids=["q1"], role="backend")
        # Nothing was said (no media): the question is unanswered and scores 0.
        assert scored["final_score"] == 0.0 and scored["answers"][0]["words"] == 0
        assert scored["answers"][0]["question_id"] == "q1"
