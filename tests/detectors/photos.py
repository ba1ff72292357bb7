"""Real photos for detector tests, fetched once and cached (see shared TESTDATA.md).

Nothing here is committed: scikit-image and matplotlib ship their sample photos, and
the face_recognition 1.3.0 source archive on PyPI carries White House portraits. The
archive is downloaded once with pip into ``~/.cache/proctor-testdata`` (override with
``TEST_MEDIA_CACHE``); a test that needs it is skipped, with the reason, when it
cannot be fetched (no network, no pip).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

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

    return np.ascontiguousarray(data.astronaut(), dtype=np.uint8)


def cameraman() -> RgbImage:
    """The cameraman: a face seen in near-profile, greyscale expanded to RGB."""
    from skimage import data

    grey = data.camera()
    return np.ascontiguousarray(np.stack([grey] * 3, axis=-1), dtype=np.uint8)


def grace_hopper() -> RgbImage:
    """Grace Hopper's portrait from matplotlib's sample data."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
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

