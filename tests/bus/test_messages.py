"""The typed bus messages: one encode/decode pair, junk refused with a clear error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from proctor.bus import node_topic, reply_topic, session_topic
from proctor.bus.messages import (
    MESSAGE_KINDS,
    as_control,
    as_reply,
    control_message,
    decode,
    decode_envelope,
    encode,
    encode_envelope,
    reply_message,
)

EXAMPLES: list[Mapping[str, Any]] = [
    {"type": "flag", "session_id": "s1", "flag": {"flag_id": "f1", "kind": "no_face"}},
    {"type": "status", "session_id": "s1", "media_time": 3.5, "risk": 0.2, "faces": 1,
     "signals": {"yaw": 0.1}, "open_flags": [], "lag_ms": None},
    {"type": "session", "session_id": "s1", "status": "live"},
    {"type": "transcript", "session_id": "s1", "segment": {"text": "hello"}},
    {"type": "clip", "session_id": "s1", "clip_id": "c1", "flag_id": "f1"},
    {"type": "break", "session_id": "s1",
     "break": {"break_id": "b1", "start": 1.0, "end": None, "reason": "", "by": "x"}},
    control_message("end", "s1", from_node="n1", args={"reason": "proctor"}),
    reply_message("r1", ok=True, result={"status": "ended"}),
    reply_message("r2", ok=False, error="no such session"),
]


def test_every_kind_has_an_example() -> None:
    assert {m["type"] for m in EXAMPLES} == MESSAGE_KINDS


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: str(m["type"]))
def test_round_trip_keeps_the_wire_shape(message: Mapping[str, Any]) -> None:
    assert decode(encode(message)) == message
    assert decode_envelope(encode_envelope("node-a/1", message)) == ("node-a/1", message)


@pytest.mark.parametrize("raw, complaint", [
    (b"not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"type": "gossip"}', "unknown bus message type"),
    (b'{"session_id": "s"}', "unknown bus message type"),
    (b'{"type": "flag", "session_id": "s"}', "lacks 'flag'"),
    (b'{"type": "flag", "session_id": 7, "flag": {}}', "'session_id' has the wrong type"),
    (b'{"type": "reply", "request_id": "r", "ok": 1, "result": null, "error": null}',
     "'ok' has the wrong type"),
    (b'{"type": "control", "action": "explode", "session_id": "s", "request_id": "r",'
     b' "args": {}, "from_node": "n"}', "unknown action"),
])
def test_junk_is_rejected_with_a_clear_error(raw: bytes, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        decode(raw)


def test_envelope_junk_is_rejected() -> None:
    for raw in (b"{}", b'{"origin": 3, "message": {}}', b'{"origin": "a"}'):
        with pytest.raises(ValueError):
            decode_envelope(raw)


def test_encode_refuses_values_json_cannot_carry() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        encode({"type": "flag", "session_id": "s", "flag": {"kinds": {1, 2}}})


def test_control_and_reply_helpers() -> None:
    request = control_message("break", "s1", from_node="n2")
    assert request["request_id"] and request["args"] == {}
    assert as_control(decode(encode(request))) == request
    assert as_reply(reply_message(request["request_id"], ok=True))["ok"] is True
    with pytest.raises(ValueError):
        as_reply(request)
    assert (session_topic("s"), node_topic("n"), reply_topic("n")) == (
        "session:s", "node:n", "reply:n")
