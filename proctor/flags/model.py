"""Typed flag records shared by the tracker, the store and the wire."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class FlagKind(StrEnum):
    FACE_ABSENT = "face_absent"
    MULTIPLE_FACES = "multiple_faces"
    HEAD_TURNED = "head_turned"
    GAZE_AWAY = "gaze_away"
    PHONE_DETECTED = "phone_detected"
    IDENTITY_MISMATCH = "identity_mismatch"
    MULTIPLE_SPEAKERS = "multiple_speakers"
    WHISPERING = "whispering"
    CAMERA_BLOCKED = "camera_blocked"
    VIDEO_LOST = "video_lost"
    AUDIO_LOST = "audio_lost"
    TAB_HIDDEN = "tab_hidden"
    WINDOW_BLUR = "window_blur"
    FULLSCREEN_EXIT = "fullscreen_exit"
    PASTE = "paste"


class Severity(StrEnum):
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.LOW: 0, Severity.MODERATE: 1, Severity.HIGH: 2}
SEVERITIES: tuple[Severity, ...] = (Severity.LOW, Severity.MODERATE, Severity.HIGH)


def utc_now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Evidence:
    clip_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Flag:
    """One flag. ``start``/``end`` are media seconds from the session's start.

    ``end`` is None while the flag is open. Kind never changes; severity only rises.
    """

    session_id: str
    candidate_id: str
    kind: FlagKind
    severity: Severity
    start: float
    end: float | None = None
    confidence: float = 1.0
    evidence: Evidence = field(default_factory=Evidence)
    source: str = ""
    flag_id: str = field(default_factory=new_id)
    created_at: str = field(default_factory=utc_now_iso)

    @property
    def is_open(self) -> bool:
        return self.end is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "flag_id": self.flag_id,
            "session_id": self.session_id,
            "candidate_id": self.candidate_id,
            "kind": str(self.kind),
            "severity": str(self.severity),
            "start": round(self.start, 3),
            "end": None if self.end is None else round(self.end, 3),
            "confidence": round(self.confidence, 4),
            "evidence": {"clip_id": self.evidence.clip_id, "metrics": dict(self.evidence.metrics)},
            "source": self.source,
            "created_at": self.created_at,
        }
