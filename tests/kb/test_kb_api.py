"""The knowledge base through the real app: add, search (hybrid, with both scores),
filters, tenants and bad input."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from signaling.app import create_app
from tests.conftest import make_config
from tests.signaling.test_tenants import add_key, status_of

API = "/api/v1"
CAP = 4000  # scoring.answers.max_document_bytes in these tests
HASH_RUBRIC = """Hash table collisions
- Explains separate chaining: each bucket holds a linked list of colliding entries.
- Explains open addressing: probe for another free slot (linear probing, double hashing).
- Mentions the load factor: a full table is resized and every key rehashed."""
HTTP_RUBRIC = """HTTP caching
- Names the Cache-Control header and max-age, which say how long a response stays fresh.
- Explains validation with ETag and If-None-Match, answered by 304 Not Modified."""


@pytest.fixture
async def app_client(tmp_path: Path,
                     aiohttp_client: Callable[..., Awaitable[TestClient]]) -> TestClient:
    config = make_config(tmp_path, scoring={"answers": {"max_document_bytes": CAP,
                                                        "chunk_words": 40}})
    return await aiohttp_client(create_app(config))


async def _add(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return await status_of(await client.post(f"{API}/kb", json=body, headers=headers), 201)


async def test_documents_are_chunked_and_found_by_hybrid_search(
        app_client: TestClient, api_headers: dict[str, str]) -> None:
    added = await _add(app_client, api_headers, kind="rubric", text=HASH_RUBRIC,
                       title="Hash tables", role="backend", topic="data structures")
    assert added["chunks"] == len(added["chunk_ids"]) >= 1 and added["role"] == "backend"
    http = await _add(app_client, api_headers, kind="rubric", text=HTTP_RUBRIC, title="HTTP")
    response = await app_client.get(f"{API}/kb/search", headers=api_headers,
                                    params={"q": "what happens when two keys collide?"})
    found = await status_of(response, 200)
    top = found["hits"][0]
    assert top["doc_id"] == added["doc_id"] and top["chunk_id"] in added["chunk_ids"]
    assert top["text"] in HASH_RUBRIC and top["title"] == "Hash tables"
    assert set(top["scores"]) == {"bm25", "vector", "fused"}
    other = next(h for h in found["hits"] if h["doc_id"] == http["doc_id"])
    assert top["scores"]["vector"] > other["scores"]["vector"]
    assert top["scores"]["fused"] > other["scores"]["fused"]
    # An exact term (ETag) reaches the other document by words and by meaning.
    words = await status_of(await app_client.get(
        f"{API}/kb/search", headers=api_headers, params={"q": "ETag", "limit": "1"}), 200)
    assert [h["doc_id"] for h in words["hits"]] == [http["doc_id"]]
    assert words["hits"][0]["scores"]["bm25"] > 0
    document = await status_of(await app_client.get(f"{API}/kb/{added['doc_id']}",
                                                    headers=api_headers), 200)
    assert document["text"] == HASH_RUBRIC


async def test_filters_narrow_the_search(app_client: TestClient,
                                         api_headers: dict[str, str]) -> None:
    backend = await _add(app_client, api_headers, kind="rubric", text=HASH_RUBRIC,
                         role="backend")
    notes = await _add(app_client, api_headers, kind="reference", text=HTTP_RUBRIC,
                       role="frontend")

    async def doc_ids(**params: str) -> set[str]:
        found = await status_of(await app_client.get(
            f"{API}/kb/search", headers=api_headers, params={"q": "cache keys", **params}),
            200)
        return {h["doc_id"] for h in found["hits"]}

    assert await doc_ids() == {backend["doc_id"], notes["doc_id"]}
    assert await doc_ids(kind="reference") == {notes["doc_id"]}
    assert await doc_ids(role="backend") == {backend["doc_id"]}
    assert await doc_ids(role="backend", kind="reference") == set()


async def test_another_tenant_sees_nothing_of_it(app_client: TestClient,
                                                 api_headers: dict[str, str]) -> None:
    mine = await _add(app_client, api_headers, kind="rubric", text=HASH_RUBRIC)
    other = await add_key(app_client, "globex-key", "globex")
    found = await status_of(await app_client.get(
        f"{API}/kb/search", headers=other, params={"q": "hash table collisions"}), 200)
    assert found["hits"] == []
    for method in ("GET", "DELETE"):
        response = await app_client.request(method, f"{API}/kb/{mine['doc_id']}",
                                            headers=other)
        assert (await status_of(response, 404))["error"]["code"] == "not_found"
    listed = await status_of(await app_client.get(f"{API}/kb", headers=other), 200)
    assert listed["documents"] == []
    deleted = await app_client.delete(f"{API}/kb/{mine['doc_id']}", headers=api_headers)
    assert (await status_of(deleted, 200))["deleted"] is True


BAD_DOCUMENTS: list[tuple[dict[str, Any], int, str]] = [
    ({"kind": "rubric", "text": "  \n\n "}, 400, "empty_document"),
    ({"kind": "rubric", "text": "x " * (CAP // 2 + 1)}, 413, "too_large"),
    ({"kind": "notes", "text": "some text"}, 400, "bad_request"),
    ({"text": "some text"}, 400, "bad_request"),
    ({"kind": "rubric", "text": 42}, 400, "bad_request"),
    ({"kind": "rubric", "text": "ok", "role": ["x"]}, 400, "bad_request"),
    ({"kind": "rubric", "text": "a lone \ud800 surrogate"}, 400, "bad_request"),
    ({"kind": "rubric", "text": "a NUL \u0000 inside"}, 400, "bad_request"),
]
BAD_SEARCHES: list[dict[str, str]] = [
    {}, {"q": " "}, {"q": "x", "limit": "0"}, {"q": "x", "limit": "many"},
    {"q": "x", "mode": "magic"}, {"q": "x", "kind": "notes"}]


async def test_bad_documents_and_searches_are_refused(app_client: TestClient,
                                                      api_headers: dict[str, str]) -> None:
    # One app for every case: each would otherwise start the whole server again.
    for body, status, code in BAD_DOCUMENTS:
        response = await app_client.post(f"{API}/kb", json=body, headers=api_headers)
        assert (await status_of(response, status))["error"]["code"] == code, body
    for params in BAD_SEARCHES:
        response = await app_client.get(f"{API}/kb/search", params=params, headers=api_headers)
        assert (await status_of(response, 400))["error"]["code"] == "bad_request", params
    listed = await status_of(await app_client.get(f"{API}/kb", headers=api_headers), 200)
    assert listed["documents"] == []  # nothing refused was stored


async def test_only_integrators_use_the_knowledge_base(app_client: TestClient) -> None:
    response = await app_client.get(f"{API}/kb/search", params={"q": "x"})
    assert response.status == 401
