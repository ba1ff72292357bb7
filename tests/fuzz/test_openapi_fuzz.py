"""schemathesis against ``/api/v1/openapi.json`` and the real app (issue 10, part 5).

Every operation of the served document, with a valid credential for it (an API key, or
the candidate or proctor token of a real session), gets positive and negative cases;
each answer must be no 5xx, a status the document declares, of its declared content
type, and a body its schema accepts. Path ids are drawn half from real objects (a
created, an ended and a live session, a real flag, webhook, job, candidate and
knowledge-base document), half generated. JSON answers must be JSON proper (no NaN).
Next to it all a real aiortc peer streams into a live session, which must still be
live and analysing when the fuzzing is over.

``FUZZ_EXAMPLES`` (default 20) sets the examples per operation and mode.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from signaling.openapi import ROUTES, Route, openapi_document
from tests.fuzz.conftest import (
    CASES,
    AppThread,
    frames_analysed,
    streaming_candidate,
    strict_json,
)
from tests.media import face_frame
from tests.peers import ClientPeer
from tests.videos import write_video

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
# CI replays the same cases each run (derandomized); FUZZ_RANDOM=1 explores new ones.
DERANDOMIZE = os.environ.get("FUZZ_RANDOM") != "1"
pytestmark = pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisDeprecationWarning")  # schemathesis' own use
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
SCHEMA = schemathesis.openapi.from_dict(openapi_document())
API = "/api/v1"
LIVE_SECONDS = 600  # longer than the suite: the peer is closed at the end


@dataclass
class World:
    """Real objects for the fuzzer's path ids, and a credential for each role."""

    server: AppThread
    http: requests.Session
    tokens: dict[str, str]  # role → credential
    ids: dict[str, list[str]]  # path parameter → real ids
    deletable: dict[str, list[str]]  # for DELETE: objects nobody else needs
    ended: str  # the session /end is fuzzed on (ending is idempotent)
    live: str
    peer: ClientPeer
    analysed_before: int
    notes: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, role: str = "integrator",
             headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        response = self.http.request(method, self.server.url + API + path, headers={
            "Authorization": f"Bearer {self.tokens[role]}", **(headers or {})},
            timeout=30, **kwargs)
        assert response.status_code < 300, (path, response.status_code, response.text)
        return response.json()


def _session(world_call: Any, candidate_id: str) -> dict[str, Any]:
    return dict(world_call("POST", "/sessions", json={"candidate_id": candidate_id}))


@pytest.fixture(scope="module")
def world(app_thread: AppThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    http = requests.Session()
    tokens = {"integrator": app_thread.api_key}
    world = World(app_thread, http, tokens, {}, {}, "", "", None, 0)  # type: ignore[arg-type]
    fuzz, done, live = (_session(world.call, c) for c in ("c-fuzz", "c-done", "c-live"))
    _session(world.call, "c-victim")  # erased by DELETE /candidates/{candidate_id}
    world.ended, world.live = done["session_id"], live["session_id"]
    world.call("POST", f"/sessions/{done['session_id']}/end")
    world.peer = app_thread.run(streaming_candidate(app_thread, live["session_id"],
                                                    live["candidate_token"], LIVE_SECONDS))
    tokens["candidate"] = fuzz["candidate_token"]
    flag = _telemetry_flag(world, live)
    sessions = [fuzz["session_id"], done["session_id"], live["session_id"]]
    tokens["proctor"] = world.call("POST", "/proctor-tokens",
                                   json={"sessions": sessions})["proctor_token"]
    hooks = [world.call("POST", "/webhooks", json={"url": "http://127.0.0.1:9/hook"})
             ["webhook_id"] for _ in range(2)]
    video = write_video(tmp_path_factory.mktemp("job") / "clip.mp4",
                        [(1.0, face_frame())], fps=5)
    job = world.call("POST", "/analyze/video", data=video.read_bytes(),
                     headers={"Content-Type": "video/mp4"})["job_id"]
    docs = [world.call("POST", "/kb", json={"kind": "rubric", "title": "fuzz",
                                            "text": "A good answer names a trade-off."})
            ["doc_id"] for _ in range(2)]
    world.ids = {"session_id": sessions, "flag_id": [flag], "candidate_id": ["c-fuzz"],
                 "webhook_id": [hooks[0]], "job_id": [job], "clip_id": [],
                 "doc_id": [docs[0]]}
    world.deletable = {"candidate_id": ["c-victim"], "webhook_id": [hooks[1]],
                       "doc_id": [docs[1]]}
    world.analysed_before = frames_analysed(app_thread, live["session_id"])
    yield world
    app_thread.run(world.peer.pc.close())
    http.close()


def _telemetry_flag(world: World, live: dict[str, Any]) -> str:
    """A real flag on the live session: a paste, sent as the candidate's telemetry."""
    sid = live["session_id"]
    world.http.post(f"{world.server.url}{API}/sessions/{sid}/events",
                    json={"events": [{"type": "paste"}]},
                    headers={"Authorization": f"Bearer {live['candidate_token']}"},
                    timeout=30).raise_for_status()
    for _ in range(100):
        flags = world.call("GET", f"/sessions/{sid}/flags")["flags"]
        if flags:
            return str(flags[0]["flag_id"])
        world.server.run(asyncio.sleep(0.1))
    raise AssertionError("the paste raised no flag")


def _route(label: str) -> Route:
    return next(r for r in ROUTES if f"{r.method.upper()} {r.path}" == label)


def _credential(world: World, route: Route) -> str:
    """The first role the route allows: the API key, else a token of that role."""
    return world.tokens[route.who[0]]


def _real_ids(world: World, route: Route) -> dict[str, list[str]]:
    names = [p.strip("{}") for p in route.path.split("/") if p.startswith("{")]
    pools = world.deletable if route.method == "delete" else world.ids
    if route.path == "/sessions/{session_id}/end":
        pools = {**pools, "session_id": [world.ended]}  # the live one must stay live
    if route.who[0] == "candidate":
        pools = {**pools, "session_id": world.ids["session_id"][:1]}  # its own session
    return {name: pools.get(name) or world.ids.get(name, []) for name in names}


def _strategy(world: World, route: Route) -> st.SearchStrategy[Any]:
    operation = SCHEMA[route.path][route.method.upper()]
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    strategies = [operation.as_strategy(generation_mode=mode) for mode in modes]
    pools = _real_ids(world, route)
    if pools and all(pools.values()):
        real = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in pools.items()})
        strategies += [real.flatmap(partial(_with_ids, operation, mode)) for mode in modes]
    return st.one_of(strategies)


def _with_ids(operation: APIOperation[Any, Any, Any, Any], mode: GenerationMode,
              ids: dict[str, str]) -> st.SearchStrategy[Any]:
    return operation.as_strategy(generation_mode=mode, path_parameters=ids)


def _strict_json(headers: dict[str, list[str]], content: bytes) -> None:
    """A JSON answer is JSON proper (no NaN)."""
    types = [v for k, values in headers.items() if k.lower() == "content-type"
             for v in values]
    if any("json" in t for t in types):
        strict_json(content)


STATUSES: defaultdict[str, Counter[int]] = defaultdict(Counter)
LABELS = [f"{r.method.upper()} {r.path}" for r in ROUTES]


@pytest.mark.parametrize("label", LABELS)
def test_operation(world: World, label: str) -> None:
    route = _route(label)
    headers = {"Authorization": f"Bearer {_credential(world, route)}"}

    @settings(max_examples=EXAMPLES * 2, deadline=None, database=None, derandomize=DERANDOMIZE,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(case=_strategy(world, route))
    def fuzz(case: Any) -> None:
        CASES[f"openapi: {label}"] += 1
        # Negative cases may mutate the credential too: the fuzzing is of what a
        # caller who may call the route can send, so the valid one is put back.
        case.headers = {**(case.headers or {}), **headers}
        response = case.call_and_validate(base_url=world.server.url + API,
                                          session=world.http, checks=CHECKS, timeout=60)
        STATUSES[label][response.status_code] += 1
        _strict_json(response.headers, response.content)

    fuzz()


def test_live_session_kept_analysing(world: World) -> None:
    """The abuse above ran next to a real candidate: still live, still analysing."""
    sid = world.live
    status = world.call("GET", f"/sessions/{sid}")
    assert status["status"] == "live"
    assert frames_analysed(world.server, sid) > world.analysed_before + 10
    assert world.peer.pc.connectionState == "connected"
    media_time = world.peer.of_type("status")[-1]["media_time"]
    world.server.run(world.peer.wait_for(
        lambda m: m.get("type") == "status" and m["media_time"] > media_time + 1,
        timeout=10))


def test_every_route_is_fuzzed(tmp_path: Path) -> None:
    """The table and the app agree: each documented operation is one the app serves
    (a route missing here would be skipped by the fuzzer)."""
    from signaling.app import create_app
    from tests.conftest import make_config

    app = create_app(make_config(tmp_path))
    served = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
              if r.resource is not None}
    documented = {(r.method, API + r.path) for r in ROUTES}
    assert documented <= served, documented - served
    served_api = {(m, p) for m, p in served if p.startswith(API + "/") and m != "head"
                  and not p.endswith("openapi.json")}
    assert served_api <= documented, served_api - documented


def test_statuses_seen() -> None:
    """Which answers the fuzzing got, per operation (-s prints them): each operation
    answered something, and the suite reached past the input checks somewhere."""
    for label in LABELS:
        print(f"{label:55s} {dict(sorted(STATUSES[label].items()))}")
    assert all(STATUSES[label] for label in LABELS)
    assert sum(n for c in STATUSES.values() for s, n in c.items() if s < 300) > len(LABELS)
