"""The HTTP API against the real app and a real SQLite store: auth, scope, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from proctor.config import Config
from signaling.auth import Role, TokenSigner
from signaling.keys import SIGNER_KEY, STORE_KEY
from tests.conftest import API_KEY
from tests.peers import bearer


async def _session(client: TestClient, api_headers: dict[str, str],
                   **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/sessions", json={"candidate_id": "c1", **body},
                                 headers=api_headers)
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def _error(response: Any, status: int, code: str | None = None) -> None:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body["error"]) == {"code", "message"} and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


async def test_health_ready_metrics_openapi(client: TestClient) -> None:
    assert (await (await client.get("/healthz")).json()) == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert "blazeface" in (await ready.json())["checks"]["models"]
    metrics = await (await client.get("/metrics")).text()
    assert "proctor_analysis_lag_seconds" in metrics
    assert "proctor_frames_dropped_total" in metrics
    spec = await (await client.get("/api/v1/openapi.json")).json()
    assert "/sessions/{session_id}/offer" in spec["paths"]


async def test_create_session_returns_scoped_tokens(client: TestClient,
                                                    api_headers: dict[str, str]) -> None:
    created = await _session(client, api_headers, exam_id="exam-7", metadata={"seat": 3})
    assert set(created) == {"session_id", "candidate_token", "proctor_token", "expires_at"}
    sid = created["session_id"]
    got = await client.get(f"/api/v1/sessions/{sid}", headers=bearer(created["proctor_token"]))
    body = await got.json()
    assert body["status"] == "created" and body["exam_id"] == "exam-7"
    assert body["metadata"] == {"seat": 3} and body["flag_counts"] == {}
    # The candidate token opens its own session's candidate routes and nothing else.
    await _error(await client.get(f"/api/v1/sessions/{sid}",
                                  headers=bearer(created["candidate_token"])), 403)
    other = await _session(client, api_headers)
    await _error(await client.get(f"/api/v1/sessions/{other['session_id']}/flags",
                                  headers=bearer(created["proctor_token"])), 403, "forbidden")
    await _error(await client.post(f"/api/v1/sessions/{other['session_id']}/offer",
                                   json={"sdp": "v=0", "type": "offer"},
                                   headers=bearer(created["candidate_token"])), 403)
    await _error(await client.post("/api/v1/sessions", json={"candidate_id": "x"},
                                   headers=bearer(created["proctor_token"])), 403)


async def test_bad_credentials(client: TestClient, api_headers: dict[str, str]) -> None:
    await _error(await client.post("/api/v1/sessions", json={"candidate_id": "c"}), 401)
    await _error(await client.post("/api/v1/sessions", json={"candidate_id": "c"},
                                   headers=bearer("wrong-key")), 401, "invalid_api_key")
    created = await _session(client, api_headers)
    sid = created["session_id"]
    forged = created["proctor_token"][:-2] + "AA"
    await _error(await client.get(f"/api/v1/sessions/{sid}", headers=bearer(forged)),
                 401, "invalid_token")
    signer: TokenSigner = client.app[SIGNER_KEY]
    expired, _ = signer.issue(Role.PROCTOR, [sid], now=0)
    await _error(await client.get(f"/api/v1/sessions/{sid}", headers=bearer(expired)),
                 401, "token_expired")
    other_server = TokenSigner(b"another secret", 3600)
    foreign, _ = other_server.issue(Role.PROCTOR, [sid])
    await _error(await client.get(f"/api/v1/sessions/{sid}", headers=bearer(foreign)), 401)


async def test_keys_made_by_the_cli_are_accepted(client: TestClient, config: Config) -> None:
    from proctor.store import ApiKeyRecord
    from signaling.auth import hash_api_key, new_api_key

    key = new_api_key()
    await client.app[STORE_KEY].add_api_key(ApiKeyRecord("k1", "acme", hash_api_key(key),
                                                         "2026-01-01T00:00:00Z"))
    response = await client.post("/api/v1/sessions", json={"candidate_id": "c"},
                                 headers=bearer(key))
    assert response.status == 201


async def test_bad_input_is_a_clear_400(client: TestClient,
                                        api_headers: dict[str, str]) -> None:
    for body in ({}, {"candidate_id": ""}, {"candidate_id": 5},
                 {"candidate_id": "c", "policy": "strict"},
                 {"candidate_id": "c", "policy": {"disable": ["no_such_flag"]}}):
        await _error(await client.post("/api/v1/sessions", json=body, headers=api_headers), 400)
    await _error(await client.post("/api/v1/sessions", data=b"{nope",
                                   headers=api_headers), 400, "bad_json")
    created = await _session(client, api_headers)
    offer_path = f"/api/v1/sessions/{created['session_id']}/offer"
    token = bearer(created["candidate_token"])
    for body in ({"sdp": "garbage", "type": "offer"}, {"sdp": "v=0\r\n", "type": "offer"},
                 {"sdp": "", "type": "offer"}, {"type": "offer"},
                 {"sdp": "v=0\r\n", "type": "answer"}):
        await _error(await client.post(offer_path, json=body, headers=token), 400, "bad_sdp")
    await _error(await client.get("/api/v1/sessions/nope", headers=api_headers), 404)
    await _error(await client.get("/api/v1/clips/nope", headers=api_headers), 404)
    await _error(await client.get("/api/v1/sessions?status=odd", headers=api_headers), 400)


async def test_oversized_body_is_413(client: TestClient, api_headers: dict[str, str],
                                     config: Config) -> None:
    big = b"{" + b" " * config.server.max_body_bytes + b"}"
    response = await client.post("/api/v1/sessions", data=big,
                                 headers={**api_headers, "Content-Type": "application/json"})
    await _error(response, 413, "too_large")


async def test_events_are_stored_and_validated(client: TestClient,
                                               api_headers: dict[str, str]) -> None:
    created = await _session(client, api_headers)
    sid = created["session_id"]
    path, token = f"/api/v1/sessions/{sid}/events", bearer(created["candidate_token"])
    events = [{"type": "tab_hidden", "time": 1000}, {"type": "tab_visible", "time": 4000},
              {"type": "paste", "time": 5000}, {"type": "copy", "time": 5100}]
    response = await client.post(path, json={"events": events, "sent_at": 6000}, headers=token)
    assert response.status == 202 and (await response.json()) == {"accepted": 4}
    stored = await client.app[STORE_KEY].list_events(sid)
    assert [e.type for e in stored] == ["tab_hidden", "tab_visible", "paste", "copy"]
    assert stored[0].client_time == 1.0
    for bad in ({"events": []}, {"events": [{"type": "launch_missiles"}]},
                {"events": [{"type": "paste", "time": "noon"}]}, {"events": "paste"}):
        await _error(await client.post(path, json=bad, headers=token), 400)
    assert len(await client.app[STORE_KEY].list_events(sid)) == 4  # nothing half-stored


async def test_end_is_idempotent_and_blocks_new_offers(client: TestClient,
                                                       api_headers: dict[str, str]) -> None:
    created = await _session(client, api_headers)
    sid = created["session_id"]
    first = await client.post(f"/api/v1/sessions/{sid}/end", headers=api_headers)
    second = await client.post(f"/api/v1/sessions/{sid}/end",
                               headers=bearer(created["candidate_token"]))
    assert first.status == second.status == 200
    assert (await first.json()) == (await second.json())
    report = await (await client.get(f"/api/v1/sessions/{sid}/report",
                                     headers=api_headers)).json()
    assert report["recommendation"] == "PASS" and report["flags"] == []
    await _error(await client.post(f"/api/v1/sessions/{sid}/offer",
                                   json={"sdp": "v=0", "type": "offer"},
                                   headers=bearer(created["candidate_token"])), 409)
    listed = await (await client.get("/api/v1/sessions?status=ended",
                                     headers=api_headers)).json()
    assert [s["session_id"] for s in listed["sessions"]] == [sid]


async def test_store_going_away_is_503_and_loses_nothing_said_ok(
        client: TestClient, api_headers: dict[str, str]) -> None:
    await client.app[STORE_KEY].close()
    response = await client.post("/api/v1/sessions", json={"candidate_id": "c"},
                                 headers=api_headers)
    await _error(response, 503, "store_unavailable")
    assert (await client.get("/readyz")).status == 503
    await client.app[STORE_KEY].open()
    assert (await client.get("/readyz")).status == 200


async def test_static_pages_are_served(client: TestClient, tmp_path: Path) -> None:
    for page in ("proctor.js", "candidate.html", "dashboard.html"):
        response = await client.get(f"/static/{page}")
        assert response.status == 200, page
    assert API_KEY  # the fixture app accepts the configured key


async def test_cors_only_for_configured_origins(
        aiohttp_client: Any, tmp_path: Path, api_headers: dict[str, str]) -> None:
    from signaling.app import create_app
    from tests.conftest import make_config

    config = make_config(tmp_path, server={"cors_origins": ["https://exam.example.org"]})
    client = await aiohttp_client(create_app(config))
    preflight = await client.options("/api/v1/sessions", headers={
        "Origin": "https://exam.example.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://exam.example.org"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    allowed = await client.post("/api/v1/sessions", json={"candidate_id": "c"},
                                headers={**api_headers, "Origin": "https://exam.example.org"})
    assert allowed.status == 201
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://exam.example.org"
    refused = await client.get("/api/v1/sessions/nope", headers={
        **api_headers, "Origin": "https://elsewhere.example"})
    assert refused.status == 404 and "Access-Control-Allow-Origin" not in refused.headers
