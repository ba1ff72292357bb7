"""The messages that travel on the bus, typed, with one JSON encode/decode pair.

The wire shape is a flat JSON object with a ``type``; alerts (flag, status, session,
transcript, clip) are forwarded as they are to the proctors' ``alerts`` DataChannels,
so their keys are the DataChannel protocol (SPEC "DataChannel messages") and must not
change. Validation checks the ``type`` and the keys each kind needs, with their JSON
types; extra keys pass (status ticks carry many, and a newer node may add some).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict, cast

from proctor.bus.base import Message


class FlagMessage(TypedDict):
    type: Literal["flag"]
    session_id: str
    flag: dict[str, Any]  # Flag.to_dict()


class StatusMessage(TypedDict):
    """About once a second per live session (the pipeline's status tick)."""

    type: Literal["status"]
    session_id: str
    media_time: NotRequired[float]
    risk: NotRequired[float]
    faces: NotRequired[int | None]
    signals: NotRequired[dict[str, float]]
    open_flags: NotRequired[list[str]]
    lag_ms: NotRequired[float | None]


class SessionMessage(TypedDict):
    type: Literal["session"]
    session_id: str
    status: str  # "live" | "ended" (a session's lifecycle status)


class TranscriptMessage(TypedDict):
    type: Literal["transcript"]
    session_id: str
    segment: dict[str, Any]  # TranscriptSegment.to_dict()


class ClipMessage(TypedDict):
    type: Literal["clip"]
    session_id: str
    clip_id: str
    flag_id: str | None  # None: a clip not made for one flag


class BreakMessage(TypedDict):
    """A declared break started (``end`` null) or ended (proctor/sessions/breaks.py)."""

    type: Literal["break"]
    session_id: str
    # break_id, start, end, reason, by ("break" is a keyword: no TypedDict field for it)


# What one node asks of a session's owner (proctor/sessions/control.py): end it, feed it
# telemetry, its live summary, a candidate's offer to answer, a break, a video relay.
ControlAction = Literal["end", "event", "summary", "offer", "break", "relay"]
CONTROL_ACTIONS: frozenset[str] = frozenset(
    {"end", "event", "summary", "offer", "break", "relay"})


class ControlMessage(TypedDict):
    """A request to the node that owns a session, on ``node:<owner>``."""

    type: Literal["control"]
    action: ControlAction
    session_id: str
    request_id: str
    args: dict[str, Any]
    from_node: str  # where the reply goes: reply:<from_node>


class ReplyMessage(TypedDict):
    """The owner's answer to a ControlMessage, on ``reply:<from_node>``."""

    type: Literal["reply"]
    request_id: str
    ok: bool
    result: dict[str, Any] | None
    error: str | None


AnyMessage = (FlagMessage | StatusMessage | SessionMessage | TranscriptMessage | ClipMessage
              | BreakMessage | ControlMessage | ReplyMessage)

_NONE = type(None)
# Per kind: the keys it needs and the JSON types each may hold (None where nullable).
_REQUIRED: dict[str, dict[str, tuple[type, ...]]] = {
    "flag": {"session_id": (str,), "flag": (dict,)},
    "status": {"session_id": (str,)},
    "session": {"session_id": (str,), "status": (str,)},
    "transcript": {"session_id": (str,), "segment": (dict,)},
    "clip": {"session_id": (str,), "clip_id": (str,), "flag_id": (str, _NONE)},
    "break": {"session_id": (str,), "break": (dict,)},
    "control": {"action": (str,), "session_id": (str,), "request_id": (str,),
                "args": (dict,), "from_node": (str,)},
    "reply": {"request_id": (str,), "ok": (bool,), "result": (dict, _NONE),
              "error": (str, _NONE)},
}
MESSAGE_KINDS: frozenset[str] = frozenset(_REQUIRED)


def validate(message: object) -> Message:
    """Check that ``message`` is a bus message; return it as a (shallow-copied) dict.

    Raises ValueError naming what is wrong."""
    if not isinstance(message, Mapping):
        raise ValueError(f"a bus message is a JSON object, not {type(message).__name__}")
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in _REQUIRED:
        raise ValueError(f"unknown bus message type {kind!r}: expected one of "
                         f"{', '.join(sorted(MESSAGE_KINDS))}")
    for key, types in _REQUIRED[kind].items():
        if key not in message:
            raise ValueError(f"bus message {kind!r} lacks {key!r}")
        if not isinstance(message[key], types):
            raise ValueError(f"bus message {kind!r}: {key!r} has the wrong type "
                             f"({type(message[key]).__name__})")
    if kind == "control" and message["action"] not in CONTROL_ACTIONS:
        raise ValueError(f"bus message 'control': unknown action {message['action']!r}")
    return dict(message)


def encode(message: Mapping[str, Any]) -> bytes:
    """Validate and JSON-encode a message (compact, UTF-8)."""
    try:
        return json.dumps(validate(message), separators=(",", ":")).encode()
    except TypeError as exc:  # a value JSON cannot carry (a set, a numpy number...)
        raise ValueError(f"bus message is not JSON: {exc}") from exc


def decode(raw: bytes | str) -> Message:
    """Parse and validate one message; ValueError for anything else."""
    try:
        parsed = json.loads(raw)
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"bus message is not JSON: {exc}") from exc
    return validate(parsed)


def as_control(message: Mapping[str, Any]) -> ControlMessage:
    """Narrow a received message to a control request (ValueError if it is not one)."""
    checked = validate(message)
    if checked["type"] != "control":
        raise ValueError(f"expected a control message, got {checked['type']!r}")
    return cast(ControlMessage, checked)


def as_reply(message: Mapping[str, Any]) -> ReplyMessage:
    """Narrow a received message to a reply (ValueError if it is not one)."""
    checked = validate(message)
    if checked["type"] != "reply":
        raise ValueError(f"expected a reply message, got {checked['type']!r}")
    return cast(ReplyMessage, checked)


def control_message(action: ControlAction, session_id: str, from_node: str,
                    args: dict[str, Any] | None = None,
                    request_id: str | None = None) -> ControlMessage:
    """A control request; a fresh request_id unless one is given."""
    return {"type": "control", "action": action, "session_id": session_id,
            "request_id": request_id or uuid.uuid4().hex, "args": args or {},
            "from_node": from_node}


def reply_message(request_id: str, *, ok: bool, result: dict[str, Any] | None = None,
                  error: str | None = None) -> ReplyMessage:
    return {"type": "reply", "request_id": request_id, "ok": ok, "result": result,
            "error": error}


def encode_envelope(origin: str, message: Mapping[str, Any]) -> bytes:
    """A message as it travels between nodes: ``{"origin": ..., "message": {...}}``; the
    origin lets a node skip its own messages (it delivered them locally already)."""
    try:
        return json.dumps({"origin": origin, "message": validate(message)},
                          separators=(",", ":")).encode()
    except TypeError as exc:
        raise ValueError(f"bus message is not JSON: {exc}") from exc


def decode_envelope(raw: bytes | str) -> tuple[str, Message]:
    """The origin and the validated message of an envelope; ValueError for junk."""
    try:
        parsed = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"bus envelope is not JSON: {exc}") from exc
    if not isinstance(parsed, dict) or not isinstance(parsed.get("origin"), str):
        raise ValueError("bus envelope lacks a string 'origin'")
    return parsed["origin"], validate(parsed.get("message"))
