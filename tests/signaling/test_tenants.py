"""Tenants through the real app: another tenant's key gets 404 for everything it did
not make, candidate ids are per tenant, revoked keys fail at once, /metrics is kept to
loopback or a token, and token lifetimes follow the session (SPEC "Tenants, tokens and
limits")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proctor.config import load_config
from proctor.flags.model import Evidence, Flag, FlagKind, Severity, new_id
from proctor.store.base import ApiKeyRecord, ClipRecord, SessionStatus
from signaling.app import create_app
from signaling.auth import Role, TokenSigner, hash_api_key, new_api_key
from signaling.keys import SESSIONS_KEY, SIGNER_KEY, STORE_KEY
from signaling.routes import CANDIDATE_GRACE_SECONDS, _metrics_allowed
from tests.conftest import make_config
from tests.media import face_frame
from tests.peers import bearer, connect
from tests.videos import write_video

API = "/api/v1"
AppClient = Callable[..., Awaitable[TestClient]]


async def add_key(client: TestClient, name: str, tenant: str) -> dict[str, str]:
    key = new_api_key()
    await client.app[STORE_KEY].add_api_key(ApiKeyRecord(
        new_id(), name, hash_api_key(key), "2026-01-01T00:00:00Z", tenant=tenant))
    return bearer(key)


async def status_of(response: Any, status: int) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def new_session(client: TestClient, headers: dict[str, str], candidate: str = "c1",
                      exam: str = "exam-1") -> dict[str, Any]:
    response = await client.post(f"{API}/sessions", headers=headers,
                                 json={"candidate_id": candidate, "exam_id": exam})
    return dict(await status_of(response, 201))


async def add_flag_and_clip(client: TestClient, session_id: str, tmp_path: Path) -> tuple[
        str, str]:
    flag = Flag(session_id=session_id, candidate_id="c1", kind=FlagKind.FACE_ABSENT,
                severity=Severity.HIGH, start=1.0, end=5.0, confidence=0.9,
                evidence=Evidence(metrics={"seconds": 4.0}), source="test")
    store = client.app[STORE_KEY]
    await store.save_flag(flag)
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    clip_id = new_id()
    await store.save_clip(ClipRecord(clip_id, session_id, flag.flag_id, str(path), 0.0, 6.0,
                                     path.stat().st_size, "2026-01-01T00:00:00Z"))
    return flag.flag_id, clip_id


@pytest.fixture
async def two(client: TestClient) -> tuple[dict[str, str], dict[str, str]]:
    return await add_key(client, "acme-key", "acme"), await add_key(client, "globex", "globex")


async def test_another_tenant_gets_404_for_every_object_of_a_session(
        client: TestClient, two: tuple[dict[str, str], dict[str, str]],
        tmp_path: Path) -> None:
    acme, globex = two
    made = await new_session(client, acme)
    sid = made["session_id"]
    flag_id, clip_id = await add_flag_and_clip(client, sid, tmp_path)
    listed = await status_of(await client.get(f"{API}/sessions", headers=globex), 200)
    assert listed == {"sessions": []}
    for path in (f"/sessions/{sid}", f"/sessions/{sid}/flags", f"/sessions/{sid}/report",
                 f"/sessions/{sid}/transcript", f"/sessions/{sid}/audit",
                 f"/clips/{clip_id}"):
        body = await status_of(await client.get(API + path, headers=globex), 404)
        assert body["error"]["code"] == "not_found", path
    posts: list[tuple[str, dict[str, Any]]] = [
        (f"/sessions/{sid}/end", {}),
        (f"/sessions/{sid}/flags/{flag_id}/review", {"verdict": "dismissed"}),
        (f"/sessions/{sid}/decision", {"decision": "pass"}),
        ("/proctor-tokens", {"sessions": [sid]}),
    ]
    for path, body in posts:
        await status_of(await client.post(API + path, headers=globex, json=body), 404)
    # None of it touched the session: its owner still sees it live, flag unreviewed.
    mine = await status_of(await client.get(f"{API}/sessions/{sid}", headers=acme), 200)
    assert mine["status"] == "created" and mine["flag_counts"] == {"face_absent": 1}
    flags = await status_of(await client.get(f"{API}/sessions/{sid}/flags", headers=acme), 200)
    assert flags["flags"][0]["review"] is None
    assert (await client.get(f"{API}/clips/{clip_id}", headers=acme)).status == 200
    listed = await status_of(await client.get(f"{API}/sessions", headers=acme), 200)
    assert [s["session_id"] for s in listed["sessions"]] == [sid]


async def test_tokens_carry_their_tenant(client: TestClient,
                                         two: tuple[dict[str, str], dict[str, str]]) -> None:
    acme, globex = two
    sid = (await new_session(client, acme, exam="shared-exam"))["session_id"]
    theirs = await new_session(client, globex, exam="shared-exam")
    # An exam-scoped token covers only its own tenant's sessions of that exam id.
    minted = await status_of(await client.post(f"{API}/proctor-tokens", headers=globex,
                                               json={"exam_id": "shared-exam"}), 201)
    token = bearer(minted["proctor_token"])
    listed = await status_of(await client.get(f"{API}/sessions", headers=token), 200)
    assert [s["session_id"] for s in listed["sessions"]] == [theirs["session_id"]]
    foreign = await client.get(f"{API}/sessions/{sid}", headers=token)
    missing = await client.get(f"{API}/sessions/{new_id()}", headers=token)
    assert foreign.status == missing.status == 403  # the same answer as no session at all
    assert client.app[SIGNER_KEY].verify(minted["proctor_token"]).tenant == "globex"
    # The session's own proctor token opens it; another tenant's session token does not.
    own = bearer(theirs["proctor_token"])
    assert (await client.get(f"{API}/sessions/{theirs['session_id']}", headers=own)).status \
        == 200
    assert (await client.get(f"{API}/sessions/{sid}", headers=own)).status == 403


async def test_an_exam_watcher_hears_only_its_own_tenant(
        client: TestClient, two: tuple[dict[str, str], dict[str, str]]) -> None:
    acme, globex = two
    before = await new_session(client, acme, exam="shared-exam")  # in the snapshot's reach
    minted = await status_of(await client.post(f"{API}/proctor-tokens", headers=globex,
                                               json={"exam_id": "shared-exam"}), 201)
    watcher = await connect(client, f"{API}/watch/offer", minted["proctor_token"], "alerts")
    try:
        foreign = await new_session(client, acme, exam="shared-exam")
        own = await new_session(client, globex, exam="shared-exam")
        await watcher.wait_for(lambda m: m.get("type") == "session"
                               and m.get("session_id") == own["session_id"], timeout=5)
        await asyncio.sleep(0.3)  # anything of the other tenant would have come by now
        heard = {m.get("session_id") for m in watcher.messages}
        assert before["session_id"] not in heard and foreign["session_id"] not in heard
        watcher.channel.send(json.dumps(  # type: ignore[attr-defined]
            {"type": "watch", "video": foreign["session_id"]}))
        await watcher.wait_for(lambda m: m.get("type") == "error", timeout=5)
    finally:
        await watcher.pc.close()


async def test_the_same_candidate_id_in_two_tenants_is_two_people(
        client: TestClient, two: tuple[dict[str, str], dict[str, str]]) -> None:
    acme, globex = two
    await new_session(client, acme, candidate="alice")
    store = client.app[STORE_KEY]
    profile = await status_of(await client.get(f"{API}/candidates/alice", headers=acme), 200)
    assert profile["sessions_total"] == 1
    await status_of(await client.get(f"{API}/candidates/alice", headers=globex), 404)
    await status_of(await client.delete(f"{API}/candidates/alice", headers=globex), 404)
    await new_session(client, globex, candidate="alice")
    erased = await status_of(await client.delete(f"{API}/candidates/alice", headers=globex),
                             200)
    assert erased["deleted"]["sessions"] == 1
    assert len(await store.list_candidate_sessions("alice", "acme")) == 1  # untouched
    profile = await status_of(await client.get(f"{API}/candidates/alice", headers=acme), 200)
    assert profile["sessions_total"] == 1


async def test_enrollments_are_per_tenant(client: TestClient,
                                          two: tuple[dict[str, str], dict[str, str]]) -> None:
    from tests.detectors.photos import face_recognition_photo
    from tests.signaling.test_candidates import encode

    acme, globex = two
    store = client.app[STORE_KEY]

    async def enroll(headers: dict[str, str], name: str) -> None:
        body = encode(face_recognition_photo(f"{name}.jpg"))
        response = await client.post(f"{API}/candidates/alice/enrollment", data=body,
                                     headers={**headers, "Content-Type": "image/jpeg"})
        await status_of(response, 201)

    await enroll(acme, "obama")
    assert await store.get_enrollment("alice", "globex") is None
    await status_of(await client.get(f"{API}/candidates/alice", headers=globex), 404)
    await enroll(globex, "biden")  # re-enrolling "alice" elsewhere replaces nothing here
    first = await store.get_enrollment("alice", "acme")
    second = await store.get_enrollment("alice", "globex")
    assert first is not None and second is not None
    assert first.ciphertext != second.ciphertext
    service = client.app[SESSIONS_KEY]
    assert await service.load_enrollment("alice", "acme") is not None
    await status_of(await client.delete(f"{API}/candidates/alice", headers=globex), 200)
    assert await store.get_enrollment("alice", "globex") is None
    assert await store.get_enrollment("alice", "acme") == first


async def test_webhooks_belong_to_the_tenant(client: TestClient,
                                             two: tuple[dict[str, str], dict[str, str]]
                                             ) -> None:
    acme, globex = two
    colleague = await add_key(client, "acme-2", "acme")  # a second key of the same tenant
    hook = await status_of(await client.post(f"{API}/webhooks", headers=acme,
                                             json={"url": "https://a.test/hook"}), 201)
    shared = await status_of(await client.get(f"{API}/webhooks", headers=colleague), 200)
    assert [w["webhook_id"] for w in shared["webhooks"]] == [hook["webhook_id"]]
    assert (await status_of(await client.get(f"{API}/webhooks", headers=globex), 200)) == {
        "webhooks": []}
    await status_of(await client.delete(f"{API}/webhooks/{hook['webhook_id']}",
                                        headers=globex), 404)


async def test_a_revoked_key_is_refused_at_once(client: TestClient) -> None:
    headers = await add_key(client, "leaving", "acme")
    await status_of(await client.get(f"{API}/sessions", headers=headers), 200)
    assert await client.app[STORE_KEY].revoke_api_key("leaving") == 1
    body = await status_of(await client.get(f"{API}/sessions", headers=headers), 401)
    assert body["error"]["code"] == "invalid_api_key"
    keys = await client.app[STORE_KEY].list_api_keys()
    assert [(k.name, k.tenant, k.revoked) for k in keys] == [("leaving", "acme", True)]


async def test_config_keys_are_of_the_default_tenant(client: TestClient,
                                                     api_headers: dict[str, str]) -> None:
    sid = (await new_session(client, api_headers))["session_id"]
    record = await client.app[STORE_KEY].get_session(sid)
    assert record is not None and record.tenant == "default"
    other = await add_key(client, "acme-key", "acme")
    await status_of(await client.get(f"{API}/sessions/{sid}", headers=other), 404)


# /metrics ---------------------------------------------------------------------------

def test_metrics_allowed_to_loopback_or_the_token(tmp_path: Path) -> None:
    closed = make_config(tmp_path)
    with_token = make_config(tmp_path, server={"metrics_token": "scrape-me"})
    for remote in ("127.0.0.1", "::1"):
        assert _metrics_allowed(remote, "", closed)
    assert not _metrics_allowed("203.0.113.9", "", closed)
    assert not _metrics_allowed("203.0.113.9", "Bearer ", closed)  # empty token: none
    assert not _metrics_allowed(None, "", closed)
    assert _metrics_allowed("203.0.113.9", "Bearer scrape-me", with_token)
    assert not _metrics_allowed("203.0.113.9", "Bearer scrape-you", with_token)


@web.middleware
async def from_afar(request: web.Request, handler: Any) -> web.StreamResponse:
    """As if the caller came from another machine (tests may only use loopback)."""
    return await handler(request.clone(remote="203.0.113.9"))


async def test_metrics_route_refuses_remote_callers(tmp_path: Path,
                                                    aiohttp_client: AppClient) -> None:
    app = create_app(make_config(tmp_path, server={"metrics_token": "scrape-me"}))
    app.middlewares.insert(0, from_afar)
    client = await aiohttp_client(app)
    assert (await client.get("/metrics")).status == 403
    assert (await client.get("/metrics", headers=bearer("wrong"))).status == 403
    scraped = await client.get("/metrics", headers=bearer("scrape-me"))
    assert scraped.status == 200 and "proctor_" in await scraped.text()
    assert (await client.get("/healthz")).status == 200  # nothing else is affected


async def test_metrics_route_serves_loopback(client: TestClient) -> None:
    assert (await client.get("/metrics")).status == 200


# Token lifetimes --------------------------------------------------------------------

def test_candidate_tokens_last_the_longest_session_and_proctor_tokens_token_seconds(
        ) -> None:
    signer = TokenSigner(b"secret", ttl_seconds=600, candidate_seconds=12 * 3600)
    candidate, candidate_expires = signer.issue(Role.CANDIDATE, ["s1"], now=1000.0)
    proctor, proctor_expires = signer.issue(Role.PROCTOR, ["s1"], now=1000.0,
                                            tenant="acme")
    assert (candidate_expires, proctor_expires) == (1000 + 12 * 3600, 1600)
    assert signer.verify(candidate, now=1000.0 + 11 * 3600).sessions == {"s1"}
    assert signer.verify(proctor, now=1500.0).tenant == "acme"
    with pytest.raises(Exception, match="expired"):
        signer.verify(proctor, now=1700.0)


def test_token_seconds_and_its_older_name(tmp_path: Path) -> None:
    default = load_config(env={})
    assert default.auth.proctor_token_seconds == default.auth.token_seconds
    assert default.auth.candidate_token_seconds == 12 * 3600
    new = load_config(env={}, overrides={"auth": {"token_seconds": 900,
                                                  "max_session_hours": 4}})
    assert (new.auth.proctor_token_seconds, new.auth.candidate_token_seconds) == (900,
                                                                                  4 * 3600)
    old = load_config(env={}, overrides={"auth": {"token_ttl_seconds": 300}})
    assert old.auth.proctor_token_seconds == 300


async def test_a_candidate_token_outlives_the_old_two_hours_but_not_its_session(
        client: TestClient, api_headers: dict[str, str]) -> None:
    made = await new_session(client, api_headers)
    sid, candidate = made["session_id"], bearer(made["candidate_token"])
    claims = client.app[SIGNER_KEY].verify(made["candidate_token"])
    assert claims.role == Role.CANDIDATE
    events = {"events": [{"type": "tab_hidden"}]}
    store = client.app[STORE_KEY]
    # Live for hours: a reconnecting candidate is let in.
    await store.update_session(sid, status=SessionStatus.LIVE,
                               started_at="2026-01-01T00:00:00.000000Z")
    assert (await client.get(f"{API}/sessions/{sid}/rtc-config",
                             headers=candidate)).status == 200
    # Ended just now: the page may still end it again (idempotent).
    await status_of(await client.post(f"{API}/sessions/{sid}/end", headers=candidate), 200)
    # Ended longer ago than the grace: the token is spent.
    await store.update_session(sid, ended_at="2020-01-01T00:00:00.000000Z")
    for path, body in ((f"/sessions/{sid}/events", events), (f"/sessions/{sid}/end", {})):
        refused = await status_of(await client.post(API + path, headers=candidate,
                                                    json=body), 401)
        assert refused["error"]["code"] == "token_expired"
    assert CANDIDATE_GRACE_SECONDS <= 600
    # Integrators and proctors still read the finished session.
    await status_of(await client.get(f"{API}/sessions/{sid}", headers=api_headers), 200)
    proctor = bearer(made["proctor_token"])
    await status_of(await client.get(f"{API}/sessions/{sid}", headers=proctor), 200)


async def test_another_tenants_analysis_job_is_not_found(client: TestClient,
                                                         api_headers: dict[str, str],
                                                         tmp_path: Path) -> None:
    video = write_video(tmp_path / "exam.mp4", [(1.0, face_frame())])
    job = await status_of(await client.post(f"{API}/analyze/video", data=video.read_bytes(),
                                            headers=api_headers), 202)
    other = await add_key(client, "rival", "rival-tenant")
    assert (await client.get(f"{API}/jobs/{job['job_id']}", headers=other)).status == 404
    assert (await client.get(f"{API}/jobs/{job['job_id']}", headers=api_headers)).status == 200
