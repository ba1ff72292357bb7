"""The one check on an image's or frame's shape, made before it is decoded or analysed.

Every detector stage scales frames by their width or height, so a shape far from a
camera's (a 16×4096 strip, a 1×39,000,000 line) makes a stage allocate gigabytes or
abort inside OpenCV. Uploads (image headers, video streams) and live WebRTC frames all
pass :func:`check_frame_shape` first; image headers are read here without decoding.
"""

from __future__ import annotations

import struct

from proctor.config import PipelineConfig

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, ...), not DHT/JPG/DAC.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # markers without a length


class FrameShapeError(ValueError):
    """An image or frame whose shape no camera makes; words fit to send back."""


def check_frame_shape(width: int, height: int, limits: PipelineConfig) -> None:
    """Refuse (FrameShapeError) a shape over ``limits``' side, area or aspect ratio."""
    if width < 1 or height < 1:
        raise FrameShapeError(f"an image of {width}×{height} pixels is empty")
    if max(width, height) > limits.max_frame_side:
        raise FrameShapeError(f"{width}×{height} pixels: a side is over "
                              f"{limits.max_frame_side}")
    if width * height > limits.max_frame_pixels:
        raise FrameShapeError(f"{width}×{height} pixels: over {limits.max_frame_pixels} "
                              "pixels in all")
    if max(width, height) > limits.max_aspect_ratio * min(width, height):
        raise FrameShapeError(f"{width}×{height} pixels: the long side is over "
                              f"{limits.max_aspect_ratio:g} times the short one")


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR or a JPEG's start-of-frame header, without
    decoding; None for other formats (the decoder then has its own pixel limit)."""
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None  # not at a marker: corrupt, the decoder will say so
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        if marker in _SOF_MARKERS and at + 9 <= len(data):
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return int(width), int(height)
        if marker == 0xDA:  # start of scan before any frame header
            return None
        at += 2 + length
    return None
