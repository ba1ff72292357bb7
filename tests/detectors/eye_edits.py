"""Edits to the eyes of a real face photo, placed by its own face mesh.

No photo here shows closed eyes, and only one a sideways glance, so tests make them:
``close_eyes`` paints the eye openings over with the cheek's skin and draws a lash line
(the mesh then reads an eye aspect ratio of about a fifth of the open one);
``shift_irises`` slides each iris along its eye. Both are crude next to a real face,
which is why tests ask only for directions and wide margins of them.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

RgbImage = npt.NDArray[np.uint8]
Points = npt.NDArray[np.float64]

# Mesh eye contours, starting at one corner, along the lower lid to the other corner
# (first nine points), then back along the upper lid.
_RIGHT_CONTOUR = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
_LEFT_CONTOUR = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
_IRISES = ((_RIGHT_CONTOUR, 468, [469, 470, 471, 472]), (_LEFT_CONTOUR, 473, [474, 475, 476, 477]))


def _eye_width(points: Points, contour: list[int]) -> float:
    return float(np.linalg.norm(points[contour[0], :2] - points[contour[8], :2]))


def _fill_mask(shape: tuple[int, ...], polygon: Points) -> npt.NDArray[np.uint8]:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 255)
    return mask


def close_eyes(image: RgbImage, points: Points) -> RgbImage:
    """The face with both eyes shut: skin over the opening, lashes along the lower lid."""
    out = image.astype(np.float32)
    for contour in (_RIGHT_CONTOUR, _LEFT_CONTOUR):
        width = _eye_width(points, contour)
        centre = points[contour, :2].mean(axis=0)
        x, y = int(centre[0]), int(centre[1])
        cheek = image[y + int(0.45 * width): y + int(0.65 * width),
                      x - int(0.3 * width): x + int(0.3 * width)].reshape(-1, 3)
        skin = np.median(cheek, axis=0)
        grown = centre + (points[contour, :2] - centre) * 1.25  # cover the lid margins too
        soft = cv2.GaussianBlur(_fill_mask(image.shape, grown), (0, 0), width * 0.08)
        alpha = soft.astype(np.float32)[..., None] / 255
        out = out * (1 - alpha) + skin * alpha
        lashes = points[contour[:9], :2] - [0.0, 0.05 * width]
        cv2.polylines(out, [np.round(lashes).astype(np.int32)], False, (40, 30, 30),
                      max(1, round(width * 0.06)), cv2.LINE_AA)
    return np.clip(out, 0, 255).astype(np.uint8)


def shift_irises(image: RgbImage, points: Points, shift: float) -> RgbImage:
    """Both irises slid by ``shift`` eye widths toward the image's right (negative: left),
    the eye's white filled in where they were, the lids clipping where they go."""
    out = image.copy()
    height, width = image.shape[:2]
    for contour, centre_index, ring in _IRISES:
        eye = _fill_mask(image.shape, points[contour, :2]) > 0
        centre = points[centre_index, :2]
        radius = 1.1 * float(np.mean(np.linalg.norm(points[ring, :2] - centre, axis=1)))
        iris = np.zeros((height, width), np.uint8)
        cv2.circle(iris, (round(centre[0]), round(centre[1])), round(radius), 255, -1)
        white = np.percentile(image[eye & (iris == 0)], 85, axis=0)
        move = np.float32([[1, 0, shift * _eye_width(points, contour)], [0, 1, 0]])
        moved = cv2.warpAffine(image, move, (width, height))
        moved_iris = cv2.warpAffine(iris, move, (width, height)) > 0
        out[eye] = white.astype(np.uint8)
        out[eye & moved_iris] = moved[eye & moved_iris]
    return out
