"""Camera frames showing real faces, for the benchmark, the tests and demos.

ROS-free. The face is NASA's public-domain portrait of astronaut Eileen Collins that
scikit-image ships (``skimage.data.astronaut``), placed on a grey gradient the way a camera
would frame a person; no frame comes from a data set.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

#: The head and shoulders inside the 512x512 photo (rows, columns) and the face within
#: them: about x 180-272, y 82-174 of the photo.
_PORTRAIT = (slice(20, 320), slice(70, 370))
_FACE_IN_PHOTO = (180, 82, 92, 92)


def portrait_bgr() -> np.ndarray:
    """The astronaut's head and shoulders, 300x300 BGR."""
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[_PORTRAIT][:, :, ::-1])


def _background(width: int, height: int) -> np.ndarray:
    gradient = np.linspace(60, 140, width, dtype=np.uint8)
    return np.repeat(np.tile(gradient, (height, 1))[..., None], 3, axis=2)


def face_frame(width: int = 640, height: int = 480, face_side: int = 360,
               x: int = None, y: int = None) -> np.ndarray:
    """A BGR frame with the portrait scaled to ``face_side`` at (x, y) (centred by default)."""
    frame = _background(width, height)
    x = (width - face_side) // 2 if x is None else x
    y = (height - face_side) // 2 if y is None else y
    frame[y:y + face_side, x:x + face_side] = cv2.resize(
        portrait_bgr(), (face_side, face_side), interpolation=cv2.INTER_AREA)
    return frame


def face_box_in_frame(face_side: int, x: int, y: int) -> Tuple[float, float, float, float]:
    """Where the face is in a :func:`face_frame` with that portrait size and position."""
    scale = face_side / 300.0
    fx, fy, fw, fh = _FACE_IN_PHOTO
    return (x + (fx - _PORTRAIT[1].start) * scale, y + (fy - _PORTRAIT[0].start) * scale,
            fw * scale, fh * scale)


def three_face_frame(width: int = 1280, height: int = 720) -> np.ndarray:
    """Three real faces of different sizes (the middle one mirrored)."""
    frame = _background(width, height)
    portrait = portrait_bgr()
    for side, x, y, mirrored in ((300, 60, 200, False), (360, 460, 160, True),
                                 (260, 900, 260, False)):
        source = portrait[:, ::-1] if mirrored else portrait
        frame[y:y + side, x:x + side] = cv2.resize(source, (side, side),
                                                   interpolation=cv2.INTER_AREA)
    return frame
