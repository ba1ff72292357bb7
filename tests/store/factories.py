"""Small records for the store tests, with the defaults most tests want."""

from __future__ import annotations

from proctor.flags.model import Flag, FlagKind, Severity
from proctor.store.base import (
    ClipRecord,
    EnrollmentRecord,
    EventRecord,
    NodeRecord,
    NodeStatus,
    SessionRecord,
    TranscriptSegment,
)


def session(session_id: str = "s1", candidate_id: str = "c1",
            created_at: str = "2024-01-01T00:00:00.000000Z") -> SessionRecord:
    return SessionRecord(session_id=session_id, candidate_id=candidate_id,
                         created_at=created_at)


def clip(clip_id: str, session_id: str = "s1", start: float = 1.0) -> ClipRecord:
    return ClipRecord(clip_id=clip_id, session_id=session_id, flag_id=None,
                      path=f"/clips/{clip_id}.mp4", start=start, end=start + 4.0,
                      size_bytes=123_456, created_at="2024-01-01T00:00:10.000000Z")


def event(event_id: str, session_id: str = "s1",
          received_at: str = "2024-01-01T00:00:05.000000Z") -> EventRecord:
    return EventRecord(event_id=event_id, session_id=session_id, type="tab_hidden",
                       client_time=None, media_time=None, received_at=received_at)


def flag(flag_id: str, session_id: str = "s1", start: float = 10.0,
         created_at: str = "2024-01-01T00:00:10.000000Z") -> Flag:
    return Flag(session_id=session_id, candidate_id="c1", kind=FlagKind.GAZE_AWAY,
                severity=Severity.LOW, start=start, flag_id=flag_id, created_at=created_at)


def segment(segment_id: str, session_id: str = "s1", start: float = 0.0,
            end: float = 2.0, text: str = "hello") -> TranscriptSegment:
    return TranscriptSegment(segment_id=segment_id, session_id=session_id, start=start,
                             end=end, text=text, confidence=0.9, language="en",
                             created_at="2024-01-01T00:00:00.000000Z")


def node(node_id: str, heartbeat_at: float = 1_000.0,
         status: NodeStatus = NodeStatus.UP) -> NodeRecord:
    return NodeRecord(node_id=node_id, address=f"http://{node_id}.internal:8080",
                      started_at="2024-01-01T00:00:00.000000Z", heartbeat_at=heartbeat_at,
                      live_sessions=3, capacity=40, status=status)


def enrollment(candidate_id: str = "c1", ciphertext: bytes = b"\x00\xffsealed\n\x01",
               created_at: str = "2024-01-01T00:00:00.000000Z") -> EnrollmentRecord:
    return EnrollmentRecord(candidate_id=candidate_id, ciphertext=ciphertext,
                            nonce=bytes(range(12)), model="sface-2021dec-int8bq",
                            created_at=created_at,
                            quality={"face_px": 231.2, "sharpness": 1893.3, "score": 0.946})
