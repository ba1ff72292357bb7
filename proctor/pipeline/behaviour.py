"""The four behavioural metrics of a report, each a share from 0 to 1 (None: not measured).

* **focus**: analysed frames showing exactly one face, of all analysed frames.
* **eye_contact**: frames whose gaze was on the screen, of the frames where the face
  mesh measured the gaze (one face, eyes found).
* **environment_stability**: analysed frames with a steady scene: one face, the same
  number of faces as the frame before, nobody else counted in the room, and the camera
  neither blocked nor frozen.
* **audio_consistency**: speech windows in the candidate's own voice, of the speech
  windows the speaker stage compared with the candidate's voice.
"""

from __future__ import annotations

from dataclasses import dataclass

from proctor.detectors.base import Observation


@dataclass
class Share:
    hits: int = 0
    total: int = 0

    def count(self, hit: bool) -> None:
        self.hits += hit
        self.total += 1

    def value(self) -> float | None:
        return round(self.hits / self.total, 4) if self.total else None


class BehaviourMeter:
    def __init__(self) -> None:
        self.focus = Share()
        self.eye_contact = Share()
        self.environment = Share()
        self.own_voice = Share()
        self._previous_faces: int | None = None

    def frame(self, observations: list[Observation]) -> None:
        """One analysed frame's observations (every stage that ran on it)."""
        signals: dict[str, float] = {}
        for observation in observations:
            signals.update(observation.signals)
        faces = signals.get("face_count")
        if faces is None:
            return
        one = int(faces) == 1
        self.focus.count(one)
        if one and "gaze_off_screen" in signals:
            self.eye_contact.count(signals["gaze_off_screen"] < 1.0)
        steady = (one and self._previous_faces in (None, int(faces))
                  and signals.get("person_count", 1.0) <= 1.0
                  and signals.get("camera_blocked", 0.0) < 1.0
                  and signals.get("video_frozen", 0.0) < 1.0)
        self.environment.count(steady)
        self._previous_faces = int(faces)

    def audio(self, observation: Observation) -> None:
        """One speaker-stage window: counted when it compared speech with the voice."""
        mismatch = observation.signals.get("second_voice_audio")
        if mismatch is not None:
            self.own_voice.count(mismatch < 1.0)

    def metrics(self) -> dict[str, float | None]:
        return {"focus": self.focus.value(), "eye_contact": self.eye_contact.value(),
                "environment_stability": self.environment.value(),
                "audio_consistency": self.own_voice.value()}
