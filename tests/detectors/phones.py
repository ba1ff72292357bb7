"""Real test media for the object detector: phone photos composited into real face frames.

Nobody here made these pictures. The phones are the 800 px press photos (phones on white)
of npm ``@devicefarmer/stf-device-db@1.4.0`` (CC-BY-SA-4.0), fetched once with
``npm pack`` into ``~/.cache/proctor-testdata/`` (``TEST_MEDIA_CACHE`` overrides) and never
committed. Faces are real portraits shipped in installed wheels (scikit-image's
astronaut, matplotlib's Grace Hopper; Obama and Biden from the ``face_recognition==1.3.0``
source archive when ``pip download`` can reach it). Frames are 640×480 webcam-like
framings; composites are made at test time, degraded the way a WebRTC webcam frame is
(softness, sensor noise, JPEG).

Used by ``tests/detectors/test_objects.py`` and ``bench/phone_calibration.py``.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

Rgb = npt.NDArray[np.uint8]
Rgba = npt.NDArray[np.uint8]

WIDTH, HEIGHT = 640, 480
STF_PACKAGE = "@devicefarmer/stf-device-db@1.4.0"
STF_PHOTOS = "package/dist/photo/x800/"
FACE_RECOGNITION_SDIST = "face_recognition==1.3.0"

# Face boxes (x, y, w, h) in each source photo, found once with MediaPipe's full-range
# face detector; frames are cut around them like a webcam at arm's length would see.
FACE_BOXES: dict[str, tuple[int, int, int, int]] = {
    "astronaut": (174, 68, 104, 104),
    "grace_hopper": (166, 128, 200, 200),
    "biden": (425, 228, 334, 334),
    "obama": (355, 134, 287, 287),
    "obama2": (141, 271, 350, 350),
    "obama3": (658, 332, 305, 305),
}


class MediaUnavailable(RuntimeError):
    """The test media could not be fetched here (no npm, no registry)."""


@dataclass(frozen=True)
class FaceFrame:
    """A 640×480 frame with one real person, and where the face lies in it."""

    name: str
    image: Rgb
    face: tuple[int, int, int, int]  # x, y, w, h in frame pixels


def cache_dir() -> Path:
    root = os.environ.get("TEST_MEDIA_CACHE", "~/.cache/proctor-testdata")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- fetching ---------------------------------------------------------------------------


def stf_photo_dir() -> Path:
    """The x800 phone photos, fetched with ``npm pack`` on first use."""
    target = cache_dir() / "stf-device-db-1.4.0" / "x800"
    if target.is_dir() and any(target.glob("*.jpg")):
        return target
    if shutil.which("npm") is None:
        raise MediaUnavailable("npm is not installed; cannot fetch " + STF_PACKAGE)
    with tempfile.TemporaryDirectory() as tmp:
        archive = _npm_pack(STF_PACKAGE, Path(tmp))
        _extract(archive, STF_PHOTOS, target)
    return target


def _npm_pack(spec: str, into: Path) -> Path:
    try:
        done = subprocess.run(
            ["npm", "pack", spec, "--pack-destination", str(into), "--silent"],
            capture_output=True, text=True, timeout=180, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MediaUnavailable(f"npm pack {spec} failed: {exc}") from exc
    archives = list(into.glob("*.tgz"))
    if done.returncode != 0 or not archives:
        raise MediaUnavailable(f"npm pack {spec} failed: {done.stderr.strip()[-300:]}")
    return archives[0]


def _extract(archive: Path, prefix: str, target: Path) -> None:
    """Unpack the members under ``prefix`` flat into ``target`` (atomically)."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith(prefix):
                source = tar.extractfile(member)
                assert source is not None
                (partial / Path(member.name).name).write_bytes(source.read())
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def face_recognition_images() -> dict[str, Path]:
    """Obama and Biden portraits from the face_recognition source archive, if fetchable."""
    target = cache_dir() / "face_recognition-1.3.0"
    names = ("biden", "obama", "obama2", "obama3")
    if not all((target / f"{n}.jpg").is_file() for n in names):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                   ":all:", FACE_RECOGNITION_SDIST, "-d", tmp, "-q"]
            try:
                subprocess.run(cmd, capture_output=True, timeout=180, check=True)
                archive = next(Path(tmp).glob("face_recognition-*.tar.gz"))
            except (OSError, subprocess.SubprocessError, StopIteration) as exc:
                raise MediaUnavailable(f"pip download {FACE_RECOGNITION_SDIST}: {exc}") from exc
            _extract(archive, "face_recognition-1.3.0/tests/test_images/", target)
    return {n: target / f"{n}.jpg" for n in names}


# --- phones -----------------------------------------------------------------------------


def phone_cutouts(limit: int | None = None) -> list[Rgba]:
    """Distinct single-phone cut-outs (RGBA, cropped to the phone), in a fixed order."""
    cutouts: list[Rgba] = []
    for path in _distinct_photos(stf_photo_dir()):
        cut = cut_out_phone(np.asarray(Image.open(path).convert("RGB")))
        if cut is not None:
            cutouts.append(cut)
            if limit is not None and len(cutouts) >= limit:
                break
    return cutouts


def phone_cutout(name: str) -> Rgba:
    """One named photo's phone (e.g. ``"001HT.jpg"``), for tests that need a known one."""
    cut = cut_out_phone(np.asarray(Image.open(stf_photo_dir() / name).convert("RGB")))
    if cut is None:
        raise ValueError(f"{name} shows no single upright phone")
    return cut


def _distinct_photos(folder: Path) -> list[Path]:
    # 118 devices share one "no photo" placeholder; keep each picture once.
    seen: set[str] = set()
    distinct: list[Path] = []
    for path in sorted(folder.glob("*.jpg")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            distinct.append(path)
    return distinct


def cut_out_phone(rgb: Rgb) -> Rgba | None:
    """The largest phone in a press photo on white, or None if it is no upright phone.

    Background is the near-white area connected to the border, so white phones and
    bright screens inside the outline stay opaque. Photos showing a tablet, a flip phone
    or front and back merged into one blob fail the shape test and are left out.
    """
    from scipy import ndimage  # scikit-image's dependency; test and bench only

    white = (rgb >= 236).all(axis=2)
    labels, _ = ndimage.label(white)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    background = np.isin(labels, edge[edge > 0])
    solid = ndimage.binary_fill_holes(ndimage.binary_opening(~background, iterations=2))
    parts, count = ndimage.label(solid)
    if count == 0:
        return None
    largest = int(np.argmax(ndimage.sum(solid, parts, range(1, count + 1)))) + 1
    box = ndimage.find_objects(parts)[largest - 1]
    mask = parts[box] == largest
    height, width = mask.shape
    if not 1.5 <= height / width <= 2.6 or mask.mean() < 0.85 or height < 300:
        return None
    alpha = np.where(mask, 255, 0).astype(np.uint8)
    return np.dstack([rgb[box], alpha])


# --- faces and clutter ------------------------------------------------------------------


def _mpl_sample(name: str) -> Path:
    import matplotlib  # test dependency through scikit-image's users; only its data file

    return Path(matplotlib.get_data_path()) / "sample_data" / name


def _source_portraits(extra: bool) -> dict[str, Rgb]:
    from skimage import data

    portraits = {
        "astronaut": data.astronaut(),
        "grace_hopper": np.asarray(Image.open(_mpl_sample("grace_hopper.jpg")).convert("RGB")),
    }
    if extra:
        for name, path in face_recognition_images().items():
            portraits[name] = np.asarray(Image.open(path).convert("RGB"))
    return portraits


def face_frames(extra: bool = False, zooms: tuple[float, ...] = (4.2,)) -> list[FaceFrame]:
    """Webcam-like 640×480 frames of real people; ``zooms`` = frame width / face width.

    ``extra`` adds the face_recognition portraits (raises MediaUnavailable if unfetchable).
    """
    frames: dict[str, FaceFrame] = {}
    for name, image in _source_portraits(extra).items():
        for zoom in zooms:
            frame = frame_around_face(name, image, FACE_BOXES[name], zoom)
            frames.setdefault(frame.name, frame)  # a small photo caps the zoom: once each
    return list(frames.values())


def frame_around_face(
    name: str, image: Rgb, face: tuple[int, int, int, int], zoom: float,
    width: int = WIDTH, height: int = HEIGHT,
) -> FaceFrame:
    """Cut a ``width``×``height`` window with the face centred, its top ~a sixth down."""
    fx, fy, fw, fh = face
    rows, cols = image.shape[:2]
    # The window stays inside the photo: a small photo gets a closer framing.
    crop_w = min(fw * zoom, cols, rows * width / height)
    crop_h = crop_w * height / width
    left = min(max(fx + fw / 2 - crop_w / 2, 0), cols - crop_w)
    top = min(max(fy - crop_h / 6, 0), rows - crop_h)
    scale = width / crop_w
    box = (left, top, left + crop_w, top + crop_h)
    window = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR, box=box)
    frame_face = (round((fx - left) * scale), round((fy - top) * scale),
                  round(fw * scale), round(fh * scale))
    return FaceFrame(f"{name}@{crop_w / fw:.1f}", np.asarray(window), frame_face)


def two_people_frame() -> Rgb:
    """Two real people side by side, each in one half of a 640×480 frame."""
    halves = [
        frame_around_face(name, image, FACE_BOXES[name], 2.6, WIDTH // 2, HEIGHT).image
        for name, image in _source_portraits(extra=False).items()
    ]
    return np.ascontiguousarray(np.hstack(halves))


def clutter_patches() -> list[Rgb]:
    """Real photo crops that are not phones: text pages, a cat, coffee, coins, a rocket…

    Pasted where phones would be, they tell the model's response to a phone apart from
    its response to any pasted rectangle.
    """
    from skimage import data

    def rgb(image: npt.NDArray[np.uint8]) -> Rgb:
        return image if image.ndim == 3 else np.stack([image] * 3, axis=-1)

    sources = [data.page(), data.text(), data.coffee(), data.chelsea(), data.coins(),
               data.rocket(), data.brick(), data.horse().astype(np.uint8) * 255,
               data.hubble_deep_field(), data.camera(), data.immunohistochemistry(),
               data.gravel(), data.grass(), data.cell(), data.moon()]
    pack = np.asarray(Image.open(_mpl_sample("Minduka_Present_Blue_Pack.png")).convert("RGB"))
    patches = [rgb(np.asarray(s, dtype=np.uint8)) for s in [*sources, pack]]
    crops = []
    for patch in patches:
        h, w = patch.shape[:2]
        # A tall and a wide crop of each, phone-like in shape but nothing like a phone.
        crops.append(patch[: h, w // 4 : w // 4 + min(w // 2, h // 2)])
        crops.append(patch[h // 4 : h // 4 + h // 2, :])
    return [np.ascontiguousarray(c) for c in crops]


# --- compositing ------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """How one object is put into a frame. ``size`` is its long side in frame pixels."""

    size: int
    center: tuple[float, float]
    angle: float = 0.0  # degrees, counter-clockwise
    lying: bool = False  # flat on a desk: turned sideways and foreshortened
    occlude: float = 0.0  # fraction of the object's lower part hidden behind the scene


def paste(frame: Rgb, obj: Rgb | Rgba, place: Placement) -> Rgb:
    """Composite ``obj`` (RGBA cut-out or opaque RGB crop) into a copy of ``frame``."""
    layer = _prepare(obj, place)
    h, w = layer.shape[:2]
    out = frame.copy()
    x0, y0 = round(place.center[0] - w / 2), round(place.center[1] - h / 2)
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + w, frame.shape[1]), min(y0 + h, frame.shape[0])
    if fx1 <= fx0 or fy1 <= fy0:
        return out
    part = layer[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0].astype(np.float32)
    alpha = part[..., 3:] / 255.0
    if place.occlude > 0:  # the scene in front hides the lower part (a hand, a laptop lid)
        rows = np.arange(fy0, fy1) - y0
        alpha[rows >= h * (1 - place.occlude)] = 0.0
    region = out[fy0:fy1, fx0:fx1].astype(np.float32)
    out[fy0:fy1, fx0:fx1] = np.clip(part[..., :3] * alpha + region * (1 - alpha), 0, 255)
    return out


def _prepare(obj: Rgb | Rgba, place: Placement) -> Rgba:
    image = Image.fromarray(obj if obj.shape[2] == 4 else _opaque(obj))
    if place.lying:  # seen lying flat on a desk: sideways, and foreshortened by the view
        image = image.rotate(90, expand=True)
        long_side = max(image.size)
        scale = place.size / long_side
        image = image.resize((max(1, round(image.width * scale)),
                              max(1, round(image.height * scale * 0.55))),
                             Image.Resampling.LANCZOS)
    else:
        scale = place.size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)),
                              max(1, round(image.height * scale))), Image.Resampling.LANCZOS)
    if place.angle:
        image = image.rotate(place.angle, resample=Image.Resampling.BICUBIC, expand=True)
    return np.asarray(image)


def _opaque(rgb: Rgb) -> Rgba:
    return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])


def webcam(frame: Rgb, rng: np.random.Generator, quality: int = 80) -> Rgb:
    """Degrade like a webcam over WebRTC: soft optics, sensor noise, lossy compression."""
    soft = Image.fromarray(frame).filter(ImageFilter.GaussianBlur(0.6))
    noisy = np.asarray(soft).astype(np.int16) + rng.integers(-3, 4, frame.shape, np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG",
                                                                    quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


# --- scenes -----------------------------------------------------------------------------

SCENES = ("hand", "front", "desk", "occluded")


def placement(scene: str, size: int, face: tuple[int, int, int, int],
              rng: np.random.Generator) -> Placement:
    """Where a phone of ``size`` px goes in a frame for one scene kind.

    hand: held up beside the face; front: held below the chin, screen to the camera;
    desk: lying on the desk at the bottom edge; occluded: beside the face with its lower
    third to half hidden, or partly out of the frame.
    """
    fx, fy, fw, fh = face
    side = rng.choice([-1.0, 1.0])
    if scene == "hand":
        x = fx + fw / 2 + side * (fw * 0.55 + size * 0.35 + rng.uniform(0, 30))
        y = fy + fh * rng.uniform(0.3, 1.0)
        return keep_inside(Placement(size, (x, y), angle=rng.uniform(-20, 20)), 0.8)
    if scene == "front":
        x = fx + fw / 2 + rng.uniform(-0.6, 0.6) * fw
        y = fy + fh * 1.1 + size * 0.5 + rng.uniform(0, 20)
        return keep_inside(Placement(size, (x, y), angle=rng.uniform(-12, 12)), 0.8)
    if scene == "desk":
        x = rng.uniform(size * 0.6, WIDTH - size * 0.6)
        y = HEIGHT - size * 0.55 / 4 - rng.uniform(4, 30)
        return keep_inside(Placement(size, (x, y), angle=rng.uniform(-10, 10), lying=True), 0.9)
    if scene == "occluded":
        base = placement("hand", size, face, rng)
        if rng.random() < 0.5:
            return Placement(size, base.center, base.angle, occlude=rng.uniform(0.3, 0.5))
        # Partly out of frame at the side: a third of its width beyond the edge.
        half_w = _half_extent(base)[0]
        x = half_w / 3 if side < 0 else WIDTH - half_w / 3
        return Placement(size, (x, base.center[1]), base.angle)
    raise ValueError(f"unknown scene {scene!r}")


def _half_extent(place: Placement) -> tuple[float, float]:
    """Half width and half height of a phone-shaped object (about 1:2) once placed."""
    if place.lying:
        return place.size / 2, place.size * 0.55 / 4
    return place.size / 4, place.size / 2


def keep_inside(place: Placement, keep: float = 1.0) -> Placement:
    """Move the object so that at least ``keep`` of its width and height lie in the frame."""
    half_w, half_h = _half_extent(place)
    mx, my = half_w * (2 * keep - 1), half_h * (2 * keep - 1)
    x = min(max(place.center[0], mx), WIDTH - mx)
    y = min(max(place.center[1], my), HEIGHT - my)
    return Placement(place.size, (x, y), place.angle, place.lying, place.occlude)


# --- held phones (bench/phone_calibration.py, test_objects.py) ------------------------

# How a candidate holds a phone in view of the camera: up beside the face, lower in
# front of the chest, tilted, and gripped with the hand hiding its lower part.
HELD_SCENES = ("beside", "lower", "angled", "gripped")
# Skin tones (RGB) spanning light to dark, for hands painted over phones or near faces.
SKIN_TONES = ((241, 194, 167), (224, 172, 140), (198, 134, 96), (161, 102, 66),
              (113, 70, 45), (84, 52, 36))


def held_placement(scene: str, size: int, face: tuple[int, int, int, int],
                   rng: np.random.Generator) -> Placement:
    """Where a phone held up in view goes (``size``: its long side in frame pixels)."""
    fx, fy, fw, fh = face
    side = rng.choice([-1.0, 1.0])
    if scene in ("beside", "angled", "gripped"):
        x = fx + fw / 2 + side * (fw * 0.55 + size * 0.35 + rng.uniform(0, 30))
        y = fy + fh * rng.uniform(0.3, 1.0)
        angle = (side * rng.uniform(25, 40) if scene == "angled" else rng.uniform(-12, 12))
        return keep_inside(Placement(size, (x, y), angle=angle), 1.0)
    if scene == "lower":
        x = fx + fw / 2 + rng.uniform(-0.8, 0.8) * fw
        y = fy + fh * 1.15 + size * 0.5 + rng.uniform(0, 30)
        return keep_inside(Placement(size, (x, y), angle=rng.uniform(-15, 15)), 1.0)
    raise ValueError(f"unknown held scene {scene!r}")


def hand_patch(width: int, rng: np.random.Generator, tone: int | None = None) -> Rgba:
    """A hand-coloured blob (palm and four fingers) ``width`` px wide, RGBA.

    Not a photo of a hand: a skin-toned, shaded shape that hides part of a phone the way
    a gripping hand does, and that sits near a face in clean frames (a hand that is not
    a phone must not be flagged).
    """
    height = max(8, round(width * 0.8))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xx / width, yy / height
    palm = ((u - 0.5) / 0.42) ** 2 + ((v - 0.62) / 0.36) ** 2 <= 1.0
    fingers = np.zeros_like(palm)
    for k in range(4):  # fingers curl over the top edge, slightly fanned
        cx = 0.2 + 0.2 * k
        fingers |= ((u - cx) / 0.085) ** 2 + ((v - 0.28) / 0.26) ** 2 <= 1.0
    mask = palm | fingers
    rgb = np.array(SKIN_TONES[int(rng.integers(len(SKIN_TONES))) if tone is None else tone],
                   np.float32)
    shade = 0.8 + 0.3 * (1 - v) + rng.normal(0, 0.03, (height, width))  # lit from above
    pixels = np.clip(rgb * shade[..., None], 0, 255)
    blurred = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(max(0.8, width / 80)))
    return np.dstack([pixels.astype(np.uint8), np.asarray(blurred)])


def grip(frame: Rgb, place: Placement, rng: np.random.Generator) -> Rgb:
    """A hand over the lower part of a phone placed at ``place`` (its lower third-half)."""
    hand = hand_patch(round(place.size * rng.uniform(0.6, 0.75)), rng)
    cx, cy = place.center
    rad = np.radians(place.angle)
    reach = place.size * rng.uniform(0.28, 0.4)  # from the centre down the phone's axis
    centre = (cx + reach * np.sin(rad), cy + reach * np.cos(rad))
    return paste(frame, hand, Placement(hand.shape[1], centre, place.angle))


def hand_near_face(frame: FaceFrame, rng: np.random.Generator) -> Rgb:
    """A clean frame with a hand raised beside or under the face (chin in hand)."""
    fx, fy, fw, fh = frame.face
    width = round(fw * rng.uniform(0.6, 0.9))
    hand = hand_patch(width, rng)
    if rng.random() < 0.5:  # beside the face, fingers up
        x = fx + fw / 2 + rng.choice([-1.0, 1.0]) * (fw * 0.55 + width * 0.3)
        y = fy + fh * rng.uniform(0.5, 0.9)
        angle = rng.uniform(-25, 25)
    else:  # under the chin
        x, y, angle = fx + fw / 2 + rng.uniform(-0.2, 0.2) * fw, fy + fh * 1.05, 180.0
    return paste(frame.image, hand, Placement(width, (x, y), angle))


def vp8(frames: list[Rgb], frame_bits: int = 40_000) -> list[Rgb]:
    """The frames after a VP8 round trip (libvpx via PyAV), as WebRTC delivers them.

    ``frame_bits`` per frame: 40 kbit is a 640×480 call at 600 kbit/s and 15 fps."""
    import av

    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = frames[0].shape[1], frames[0].shape[0]
    codec.pix_fmt, codec.bit_rate = "yuv420p", frame_bits
    codec.time_base = Fraction(1, 1)  # one frame a "second": the rate is bits per frame
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    decoder = av.CodecContext.create("vp8", "r")
    out: list[Rgb] = []
    for index, image in enumerate([*frames, None]):
        frame = None
        if image is not None:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
        for packet in codec.encode(frame):
            for decoded in decoder.decode(packet):
                out.append(np.asarray(decoded.to_ndarray(format="rgb24"), np.uint8))
    return out
