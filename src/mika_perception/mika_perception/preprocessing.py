"""The one face preprocessing shared by the node, training and evaluation.

ROS-free. A model is only as good as the agreement between the pixels it was trained on
and the pixels it sees at run time, so every caller goes through :func:`preprocess_face`
with the :class:`PreprocessSpec` stored inside the model file.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Iterable, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

#: Bumped whenever the meaning of a spec field changes, so an old model file is not
#: silently fed pixels prepared differently from those it was trained on.
PREPROCESS_VERSION = 'mika-face-preprocess/2'
#: Versions whose files this code reads the same way: /1 had no ``align_eyes`` (False).
READABLE_VERSIONS = ('mika-face-preprocess/1', PREPROCESS_VERSION)

EQUALISATIONS = ('none', 'hist', 'clahe')
SCALINGS = ('unit', 'symmetric')

Box = Tuple[int, int, int, int]  # x, y, width, height in pixels


@dataclass(frozen=True)
class PreprocessSpec:
    """How a face crop becomes model input; travels inside the model file."""

    size: int = 48
    margin: float = 0.1
    equalisation: str = 'hist'
    scaling: str = 'symmetric'
    clahe_clip_limit: float = 2.0
    clahe_tile: int = 4
    #: Rotate the crop so the detector's eye keypoints lie level (the upright framing of
    #: FER-2013) and fill what lies outside the frame with its edge, not a stretched crop.
    align_eyes: bool = False
    version: str = PREPROCESS_VERSION

    def __post_init__(self):
        if self.size < 8:
            raise ValueError(f'size must be >= 8, got {self.size}')
        if not 0.0 <= self.margin <= 1.0:
            raise ValueError(f'margin must be in [0, 1], got {self.margin}')
        if self.equalisation not in EQUALISATIONS:
            raise ValueError(
                f'equalisation must be one of {EQUALISATIONS}, got {self.equalisation!r}')
        if self.scaling not in SCALINGS:
            raise ValueError(f'scaling must be one of {SCALINGS}, got {self.scaling!r}')
        if self.version not in READABLE_VERSIONS:
            raise ValueError(
                f'preprocessing version {self.version!r} is not supported by this code '
                f'({PREPROCESS_VERSION!r}); retrain the model or update mika_perception')

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return (self.size, self.size, 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> 'PreprocessSpec':
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f'unknown preprocessing fields {unknown}')
        values = dict(values)
        values['version'] = PREPROCESS_VERSION  # a readable older version means the same
        return cls(**values)


def to_grey(image: np.ndarray) -> np.ndarray:
    """BGR, BGRA or grey (uint8 or uint16) to a uint8 grey image."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f'expected a uint8 or uint16 image, got {image.dtype}')
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f'expected a grey, BGR or BGRA image, got shape {image.shape}')


def crop_with_margin(image: np.ndarray, box: Optional[Box], margin: float) -> np.ndarray:
    """The box grown by ``margin`` of its size on every side, clipped to the image."""
    if box is None:
        return image
    x, y, w, h = (int(round(v)) for v in box)
    if w <= 0 or h <= 0:
        raise ValueError(f'face box must have a positive size, got {box}')
    dx, dy = int(round(w * margin)), int(round(h * margin))
    height, width = image.shape[:2]
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f'face box {box} lies outside the {width}x{height} image')
    return image[y0:y1, x0:x1]


def _equalise(grey: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    if spec.equalisation == 'hist':
        return cv2.equalizeHist(grey)
    if spec.equalisation == 'clahe':
        clahe = cv2.createCLAHE(clipLimit=spec.clahe_clip_limit,
                                tileGridSize=(spec.clahe_tile, spec.clahe_tile))
        return clahe.apply(grey)
    return grey


def _scale(grey: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    values = grey.astype(np.float32) / 255.0
    if spec.scaling == 'symmetric':
        values = values * 2.0 - 1.0
    return values


def face_crop(image: np.ndarray, box: Optional[Box] = None,
              spec: PreprocessSpec = PreprocessSpec(),
              roll_deg: Optional[float] = None) -> np.ndarray:
    """The grey uint8 ``size`` x ``size`` face before equalisation and scaling.

    ``roll_deg`` is the face's in-plane rotation from the detector's eyes (see
    :attr:`mika_perception.detection.Detection.roll_deg`), undone where the spec aligns eyes.
    ``preprocess_face(face_crop(image, box, spec), None, spec)`` equals
    ``preprocess_face(image, box, spec)``: datasets store this crop (small, and it can be
    augmented like a FER-2013 image) and still feed the model exactly what the node does.
    """
    if box is not None and spec.align_eyes:
        return _aligned_crop(np.asarray(image), box, spec, roll_deg or 0.0)
    grey = to_grey(crop_with_margin(np.asarray(image), box, spec.margin))
    if grey.size == 0:
        raise ValueError(f'empty face image {grey.shape}')
    if grey.shape != (spec.size, spec.size):
        shrinking = grey.shape[0] > spec.size or grey.shape[1] > spec.size
        grey = cv2.resize(grey, (spec.size, spec.size),
                          interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.ascontiguousarray(grey)


def _aligned_crop(image: np.ndarray, box: Box, spec: PreprocessSpec,
                  roll_deg: float) -> np.ndarray:
    """The box grown by the margin and turned counter-clockwise by ``roll_deg`` about its
    centre (levelling an eye line turned clockwise by it), as a grey square.

    A window around the face is taken first (its part outside the image filled with the
    image's edge) and shrunk by area to about twice the output size, so a large face is
    averaged, not aliased, by the final bilinear warp.
    """
    x, y, w, h = (float(v) for v in box)
    if not (w > 0 and h > 0):
        raise ValueError(f'face box must have a positive size, got {box}')
    height, width = image.shape[:2]
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise ValueError(f'face box {box} lies outside the {width}x{height} image')
    grow = 1.0 + 2.0 * spec.margin
    side_w, side_h = w * grow, h * grow
    reach = int(math.ceil(0.75 * max(side_w, side_h))) + 1  # beyond the half diagonal
    left, top = int(math.floor(x + w / 2)) - reach, int(math.floor(y + h / 2)) - reach
    window = to_grey(_window(image, left, top, 2 * reach))
    shrink = min(1.0, 2.0 * spec.size / max(side_w, side_h))
    if shrink < 1.0:
        shrunk = max(1, int(round(2 * reach * shrink)))
        window = cv2.resize(window, (shrunk, shrunk), interpolation=cv2.INTER_AREA)
        shrink = shrunk / (2 * reach)
    # pixel centres: source pixel i sits at i + 0.5 in box coordinates
    centre = np.array([(x + w / 2 - left) * shrink - 0.5, (y + h / 2 - top) * shrink - 0.5])
    turn = cv2.getRotationMatrix2D((0.0, 0.0), roll_deg, 1.0)[:, :2]
    scale = np.diag([spec.size / (side_w * shrink), spec.size / (side_h * shrink)])
    linear = scale @ turn
    matrix = np.hstack([linear, (spec.size / 2 - 0.5 - linear @ centre)[:, None]])
    return cv2.warpAffine(window, matrix, (spec.size, spec.size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def _window(image: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    """``image[top:top+side, left:left+side]``, what lies outside filled with the edge."""
    height, width = image.shape[:2]
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(width, left + side), min(height, top + side)
    return cv2.copyMakeBorder(np.ascontiguousarray(image[y0:y1, x0:x1]), y0 - top,
                              top + side - y1, x0 - left, left + side - x1,
                              cv2.BORDER_REPLICATE)


def preprocess_face(image: np.ndarray, box: Optional[Box] = None,
                    spec: PreprocessSpec = PreprocessSpec(),
                    roll_deg: Optional[float] = None) -> np.ndarray:
    """One face as float32 model input of shape ``spec.input_shape``.

    ``image`` is BGR, BGRA or grey (uint8/uint16); ``box`` is (x, y, w, h) in pixels or
    ``None`` when the image already is a face crop (FER-2013); ``roll_deg``: see
    :func:`face_crop`.
    """
    return _scale(_equalise(face_crop(image, box, spec, roll_deg), spec), spec)[:, :, np.newaxis]


def preprocess_faces(image: np.ndarray, boxes: Sequence[Optional[Box]],
                     spec: PreprocessSpec = PreprocessSpec(),
                     rolls_deg: Optional[Sequence[Optional[float]]] = None) -> np.ndarray:
    """All faces of one frame as one (N, size, size, 1) float32 batch."""
    rolls_deg = [None] * len(boxes) if rolls_deg is None else rolls_deg
    if len(rolls_deg) != len(boxes):
        raise ValueError(f'{len(boxes)} boxes but {len(rolls_deg)} roll angles')
    batch = np.empty((len(boxes),) + spec.input_shape, dtype=np.float32)
    for i, (box, roll) in enumerate(zip(boxes, rolls_deg)):
        batch[i] = preprocess_face(image, box, spec, roll)
    return batch


def preprocess_crops(crops: Iterable[np.ndarray],
                     spec: PreprocessSpec = PreprocessSpec()) -> np.ndarray:
    """Many ready face crops (for example FER-2013 images) as one float32 batch."""
    return np.stack([preprocess_face(crop, None, spec) for crop in crops]).astype(np.float32)
