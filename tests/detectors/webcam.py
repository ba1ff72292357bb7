"""Real photos made to look like webcam frames: scaled, framed, shifted, compressed."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

RgbImage = npt.NDArray[np.uint8]
Box = tuple[float, float, float, float]  # x, y, w, h


def jpeg(image: RgbImage, quality: int) -> RgbImage:
    """Through a JPEG round trip: a lossy codec's blocking and softening, as H.264 at
    webcam bitrates gives."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))


def webcam_frame(image: RgbImage, face_box: Box, *, face_px: float = 160,
                 shift: tuple[int, int] = (0, 0), quality: int = 70,
                 size: tuple[int, int] = (640, 480)) -> RgbImage:
    """The photo as a webcam shows it: scaled so the face is ``face_px`` wide, cut to a
    ``size`` frame with the face a little above the middle (moved by ``shift``), then
    JPEG-compressed at ``quality``."""
    x, y, w, h = face_box
    scale = face_px / w
    scaled = cv2.resize(image, None, fx=scale, fy=scale,
                        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    width, height = size
    left = round((x + w / 2) * scale - width / 2) - shift[0]
    top = round((y + h / 2) * scale - height * 0.45) - shift[1]
    pad = max(width, height)  # replicate the edges where the frame leaves the photo
    padded = cv2.copyMakeBorder(scaled, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    frame = padded[top + pad: top + pad + height, left + pad: left + pad + width]
    return jpeg(np.ascontiguousarray(frame), quality)
