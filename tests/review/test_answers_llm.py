"""The optional LLM scorer against a real aiohttp server that speaks the OpenAI and
Ollama chat APIs, with canned answers: schema-valid ones (one claim cites a chunk that
was never retrieved, and is dropped), a malformed one and a slow one, which fall back to
the local scorer without breaking the report."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proctor.flags.model import new_id
from proctor.review.llm import OUTPUT_SCHEMA
from proctor.store.base import TranscriptSegment
from signaling.app import create_app
from signaling.keys import STORE_KEY
from tests.conftest import make_config
from tests.review import interview_kb as kb
from tests.signaling.test_tenants import status_of

API = "/api/v1"
CHUNK_ID = re.compile(r"\[chunk_id: ([^\]]+)\]")


class CannedLlm:
    """An LLM endpoint with fixed answers: a score citing the first excerpt given, plus a
    claim citing an invented chunk; for an answer about hiking, text that is no JSON."""

    def __init__(self, api: str, delay: float = 0.0) -> None:
        self.api = api
        self.delay = delay
        self.requests: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()
        path = "/api/chat" if self.api == "ollama" else "/v1/chat/completions"
        app.router.add_post(path, self.chat)
        return app

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        await asyncio.sleep(self.delay)
        schema = body["format"] if self.api == "ollama" else \
            body["response_format"]["json_schema"]["schema"]
        if body.get("model") != "canned" or schema != OUTPUT_SCHEMA:
            return web.json_response({"error": "bad request"}, status=400)
        prompt = body["messages"][-1]["content"]
        content = "Sure! Here is my score: 9/10" if "hiking" in prompt else json.dumps(
            {"criteria": [
                {"name": "coverage", "score": 9, "reason": "names both strategies",
                 "chunk_ids": CHUNK_ID.findall(prompt)[:1],
                 "quote": "separate chaining"},
                {"name": "invented", "score": 0, "reason": "cites nothing retrieved",
                 "chunk_ids": ["no-such-chunk"], "quote": "x"}]})
        message = {"role": "assistant", "content": content}
        if self.api == "ollama":
            return web.json_response({"model": "canned", "message": message, "done": True})
        return web.json_response({"id": "c1", "object": "chat.completion",
                                  "choices": [{"index": 0, "message": message,
                                               "finish_reason": "stop"}]})


async def _scored(tmp_path: Path, llm: CannedLlm,
                  aiohttp_client: Callable[..., Awaitable[TestClient]],
                  api_headers: dict[str, str], timeout: float = 10.0) -> dict[str, Any]:
    """A session with a good and an off-topic answer, scored with ``llm`` configured."""
    server = TestServer(llm.app(), host="127.0.0.1")
    await server.start_server()
    try:
        config = make_config(tmp_path, scoring={"llm": {
            "url": str(server.make_url("")), "model": "canned", "api": llm.api,
            "timeout_seconds": timeout, "retries": 1}})
        client = await aiohttp_client(create_app(config))
        await status_of(await client.post(f"{API}/kb", headers=api_headers, json={
            "kind": "rubric", "text": kb.HASH_RUBRIC, "title": "hash"}), 201)
        created = await status_of(await client.post(f"{API}/sessions", headers=api_headers,
                                                    json={"candidate_id": "c1"}), 201)
        sid = created["session_id"]
        questions = [{"question_id": "good", "text": kb.HASH_QUESTION, "asked_at": 1.0},
                     {"question_id": "off", "text": kb.HASH_QUESTION, "asked_at": 20.0}]
        await status_of(await client.post(f"{API}/sessions/{sid}/questions",
                                          headers=api_headers, json={"questions": questions}),
                        200)
        await status_of(await client.post(f"{API}/sessions/{sid}/end", headers=api_headers),
                        200)
        for start, text in ((2.0, kb.GOOD_HASH_ANSWER), (21.0, kb.OFF_TOPIC_ANSWER)):
            await client.app[STORE_KEY].add_transcript_segment(TranscriptSegment(
                new_id(), sid, start, start + 10.0, text, 0.9, "en", "2026-01-01T00:00:00Z"))
        result = await status_of(await client.post(f"{API}/sessions/{sid}/score",
                                                   headers=api_headers), 200)
        report = await status_of(await client.get(f"{API}/sessions/{sid}/report",
                                                  headers=api_headers), 200)
        return {"result": result, "report": report}
    finally:
        await server.close()


@pytest.mark.parametrize("api", ["openai", "ollama"])
async def test_llm_claims_must_cite_retrieved_chunks_and_bad_output_falls_back(
        tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient]],
        api_headers: dict[str, str], api: str) -> None:
    llm = CannedLlm(api)
    scored = await _scored(tmp_path, llm, aiohttp_client, api_headers)
    result, report = scored["result"], scored["report"]
    good, off = result["answers"]
    # The LLM's cited claim is kept, the invented one dropped and counted.
    assert good["scorer"] == "llm:canned" and good["score"] == 9.0
    assert [c["name"] for c in good["criteria"]] == ["coverage"]
    assert good["dropped_claims"] == 1 and result["dropped_claims"] == 1
    assert good["citations"][0]["quote"] == "separate chaining"
    assert good["citations"][0]["quote"] in kb.HASH_RUBRIC
    # Malformed twice (the first try and its retry): the local scorer's verdict instead.
    assert off["scorer"] == "local" and off["fallback"] and off["score"] <= 2.0
    assert result["scorer"] == "mixed" and result["fallbacks"] == 1
    assert len(llm.requests) == 3
    assert report["answer_scoring"]["answers"] == result["answers"]


async def test_an_llm_that_times_out_falls_back_to_the_local_scorer(
        tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient]],
        api_headers: dict[str, str]) -> None:
    llm = CannedLlm("openai", delay=5.0)
    scored = await _scored(tmp_path, llm, aiohttp_client, api_headers, timeout=0.3)
    answers = scored["result"]["answers"]
    assert all(a["scorer"] == "local" and "timed out" in a["fallback"] for a in answers)
    assert answers[0]["score"] >= 7.0 > answers[1]["score"]
    assert scored["report"]["answer_scoring"]["final_score"] == scored["result"]["final_score"]
