"""End to end: the blocking client drives a real ``proctor serve`` subprocess on
127.0.0.1 (its own data directory, SQLite, models loaded as in production)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from proctor.client import ProctorError, SyncProctorClient
from tests.e2e.conftest import Server, serve


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("client-server"))


def test_sync_client_drives_a_real_server(server: Server, tmp_path: Path) -> None:
    before = threading.active_count()
    with SyncProctorClient(server.url, server.api_key) as proctor:
        created = proctor.create_session("alice", exam_id="final",
                                         metadata={"platform_id": "42"})
        sid = created["session_id"]
        summary = proctor.get_session(sid)
        assert (summary["status"], summary["exam_id"]) == ("created", "final")
        assert sid in [s["session_id"] for s in proctor.list_sessions("created")]

        # The candidate's token may end its session; a proctor's may read it.
        reviewer = proctor.with_credential(created["proctor_token"])
        assert reviewer.get_session(sid)["candidate_id"] == "alice"
        ended = proctor.with_credential(created["candidate_token"]).end_session(sid)
        assert ended["status"] == "ended"

        report = reviewer.get_report(sid)
        assert report["session_id"] == sid and report["decision"] is None
        decided = reviewer.decide(sid, "pass", "clean session")
        assert decided["decision"]["decision"] == "pass"
        assert proctor.get_report(sid)["decision"] is not None
        assert [e["action"] for e in proctor.get_audit(sid)] == ["end", "decision"]
        assert sid in [s["session_id"] for s in proctor.list_sessions("ended")]
        assert proctor.get_transcript(sid)["segments"] == []
        assert [n["this_node"] for n in proctor.list_nodes()] == [True]

        with pytest.raises(ProctorError) as missing:
            proctor.get_session("no-such-session")
        assert (missing.value.status, missing.value.code) == (404, "not_found")
        with pytest.raises(ProctorError) as refused:
            reviewer.create_session("mallory")
        assert (refused.value.status, refused.value.code) == (403, "forbidden")
    with SyncProctorClient(server.url, "not-the-key") as stranger, \
            pytest.raises(ProctorError) as unauthorized:
        stranger.list_sessions()
    assert (unauthorized.value.status, unauthorized.value.code) == (401, "invalid_api_key")
    assert threading.active_count() == before  # each client's loop thread is gone
    with pytest.raises(RuntimeError):
        proctor.list_sessions()  # closed
