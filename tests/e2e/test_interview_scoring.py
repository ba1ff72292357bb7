"""An interview end to end: answers spoken (espeak-ng) into a live session over a real
aiortc peer, transcribed live by Whisper tiny.en, questions posted with their media
times, the session ended and scored against the tenant's knowledge base."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.audio_media import RATE, concat, espeak, silence
from tests.media import face_frame
from tests.peers import RecordedAudioTrack, ScheduledVideoTrack, connect
from tests.review import interview_kb as kb

API = "/api/v1"
LEAD, GAP = 1.0, 3.0  # seconds of silence before the first answer and between answers
INDEX_QUESTION = "What is a database index, and why is it useful?"
INDEX_RUBRIC = """Database indexes
- Explains that an index is a sorted structure, usually a B-tree, over one or more columns.
- Explains that it lets queries find rows without scanning the whole table.
- Mentions the cost: indexes take space and slow down inserts and updates."""
SPOKEN = [  # (question id, question, what the candidate says)
    ("hash", kb.HASH_QUESTION,
     "A collision is when two keys get the same hash. The table can chain them in a list, "
     "or it can probe for the next empty slot. When the table is too full, it grows and "
     "hashes every key again."),
    ("cache", kb.CACHE_QUESTION,
     "The server sends a Cache-Control header with a max age, so the browser knows how "
     "long the response stays fresh. Then it checks again with an ETag, and the server "
     "answers not modified."),
    ("index", INDEX_QUESTION,
     "Last summer I went hiking in the mountains with my dog, and in the evenings I "
     "cooked pasta for my friends."),
]
SPEED = 150  # espeak-ng words per minute: Whisper tiny.en hears it more surely than 175


async def _ok(response: Any, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def _transcript_complete(client: TestClient, sid: str,
                               headers: dict[str, str]) -> None:
    """Ending waits a while for the transcript; on a busy machine it may finish after."""
    for _ in range(300):
        report = await _ok(await client.get(f"{API}/sessions/{sid}/report", headers=headers))
        if report["transcript"]["complete"]:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the transcript did not complete")


async def test_spoken_answers_are_scored_against_the_rubrics(
        client: TestClient, api_headers: dict[str, str]) -> None:
    rubrics = {}
    for qid, text in (("hash", kb.HASH_RUBRIC), ("cache", kb.CACHE_RUBRIC),
                      ("index", INDEX_RUBRIC)):
        added = await _ok(await client.post(f"{API}/kb", headers=api_headers, json={
            "kind": "rubric", "text": text, "title": qid, "role": "backend"}), 201)
        rubrics[qid] = added["doc_id"]
    await _ok(await client.post(f"{API}/kb", headers=api_headers, json={
        "kind": "reference", "text": kb.HASH_REFERENCE, "title": "notes"}), 201)

    # The candidate's audio: each answer after a pause, during which its question is asked.
    clips = [espeak(answer, speed=SPEED) for _, _, answer in SPOKEN]
    audio = concat(silence(LEAD), *[concat(c, silence(GAP)) for c in clips])
    starts, t = [], LEAD
    for clip in clips:
        starts.append(t)
        t += len(clip) / RATE + GAP
    questions = [{"question_id": qid, "text": text, "asked_at": round(start - 1.0, 2)}
                 for (qid, text, _), start in zip(SPOKEN, starts, strict=True)]
    total = len(audio) / RATE

    created = await _ok(await client.post(f"{API}/sessions", headers=api_headers, json={
        "candidate_id": "interviewee", "metadata": {"role": "backend"}}), 201)
    sid = created["session_id"]
    track = RecordedAudioTrack(audio)
    candidate = await connect(
        client, f"{API}/sessions/{sid}/offer", created["candidate_token"], "proctor",
        track=ScheduledVideoTrack([(total, face_frame())], duration=total + 1), audio=track)
    # The integrator posts each question as it is asked, while the session is live
    # (the track is this test's own: _sent is how far it has played).
    for question in questions:
        while track._sent / RATE < question["asked_at"]:
            await asyncio.sleep(0.1)
        await _ok(await client.post(f"{API}/sessions/{sid}/questions", headers=api_headers,
                                    json={"questions": [question]}))
    live = await client.post(f"{API}/sessions/{sid}/score", headers=api_headers)
    assert (await _ok(live, 409))["error"]["code"] == "not_ended"
    while track._sent < len(audio):  # every answer has been spoken into the session
        await asyncio.sleep(0.1)
    await _ok(await client.post(f"{API}/sessions/{sid}/end", headers=api_headers))
    await candidate.pc.close()
    await _transcript_complete(client, sid, api_headers)

    scored = await _ok(await client.post(f"{API}/sessions/{sid}/score", headers=api_headers))
    answers = {a["question_id"]: a for a in scored["answers"]}
    assert list(answers) == ["hash", "cache", "index"]
    assert all(answers[q]["words"] >= 5 for q in answers), scored  # each was transcribed
    relevant = (answers["hash"]["score"], answers["cache"]["score"])
    assert min(relevant) >= 6.0 and answers["index"]["score"] <= 2.0, scored
    assert min(relevant) - answers["index"]["score"] >= 4.0
    for qid in ("hash", "cache"):
        cited = {c["doc_id"] for c in answers[qid]["citations"]}
        assert rubrics[qid] in cited, answers[qid]
    report = await _ok(await client.get(f"{API}/sessions/{sid}/report", headers=api_headers))
    assert report["answer_scoring"]["final_score"] == scored["final_score"]
    assert report["answer_scoring"]["answers"] == scored["answers"]
