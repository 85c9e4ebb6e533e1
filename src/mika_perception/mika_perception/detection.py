"""Face detectors: OpenCV's Haar cascade (always available) and BlazeFace (fast, steadier).

ROS-free. A detector takes a BGR uint8 image and returns :class:`Detection` boxes in pixels
of that image. BlazeFace is MediaPipe's face detector run in LiteRT (``ai_edge_litert``):
about 1 ms (short range, faces within ~2 m) or 4 ms (full range, up to ~5 m) per frame on
one core here, against 20-120 ms for Haar. Its model files come from the mediapipe wheel on
PyPI at setup (:mod:`mika_perception.fetch_face_detector`); where they are absent
``create_detector('auto')`` falls back to Haar and says why.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from mika_perception.resources import models_dir

DETECTORS = ('auto', 'blazeface', 'blazeface_short', 'blazeface_full', 'haar')
HAAR_CASCADE = 'haarcascade_frontalface_default.xml'
HOW_TO_GET_BLAZEFACE = (
    'fetch it with `python src/mika_perception/mika_perception/fetch_face_detector.py` '
    '(scripts/setup.sh does) and rebuild, or set detector to haar')


def default_model_dir() -> str:
    """share/mika_perception/models/face_detector when installed, else the source tree's."""
    return str(models_dir() / 'face_detector')


@dataclass(frozen=True)
class Detection:
    """One face: box (x, y, width, height) in pixels of the input image, and a score in [0, 1].

    ``roll_deg``: how far the line from the face's image-left eye to its image-right eye is
    turned clockwise in the image (0: level; None where the detector has no eye keypoints).
    Haar has no calibrated score: its detections have score 1 and no eyes.
    """

    box: Tuple[float, float, float, float]
    score: float
    roll_deg: Optional[float] = None


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade on a grey, equalised, optionally downscaled frame.

    ``max_width``: frames wider than this are shrunk first (Haar's cost grows with the area;
    faces smaller than ``min_face_px`` at full resolution are not looked for anyway).
    """

    name = 'haar'

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_face_px: int = 40, max_width: int = 320):
        path = os.path.join(cv2.data.haarcascades, HAAR_CASCADE)
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f'OpenCV could not load its Haar cascade {path}')
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face_px = min_face_px
        self.max_width = max_width

    def detect(self, bgr: np.ndarray) -> List[Detection]:
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        scale = min(1.0, self.max_width / grey.shape[1]) if self.max_width > 0 else 1.0
        if scale < 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        min_side = max(12, int(round(self.min_face_px * scale)))
        boxes = self._cascade.detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side))
        return [Detection(tuple(float(v) / scale for v in box), 1.0) for box in boxes]

    def reset(self) -> None:
        """Nothing to forget: each frame is detected on its own."""


@dataclass(frozen=True)
class _BlazeFaceVariant:
    file_name: str
    input_size: int
    strides: Tuple[int, ...]
    anchors_per_cell: int
    default_min_score: float


# From MediaPipe's face_detection_{short,full}_range.pbtxt (SSD anchors, fixed size).
_VARIANTS = {
    'blazeface_short': _BlazeFaceVariant('face_detection_short_range.tflite', 128,
                                         (8, 16, 16, 16), 2, 0.5),
    'blazeface_full': _BlazeFaceVariant('face_detection_full_range_sparse.tflite', 192,
                                        (4,), 1, 0.6),
}


def _ssd_anchor_centres(input_size: int, strides: Sequence[int],
                        anchors_per_cell: int) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1], in the model's output order.

    Consecutive layers with the same stride share one grid (MediaPipe's SsdAnchorsCalculator);
    every anchor has size 1 (fixed_anchor_size), so only centres matter.
    """
    centres = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        same = 0
        while layer < len(strides) and strides[layer] == stride:
            same += 1
            layer += 1
        cells = int(np.ceil(input_size / stride))
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells,
                             indexing='ij')
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, same * anchors_per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> List[int]:
    """MediaPipe's weighted non-maximum suppression, in place on ``boxes`` (x0, y0, x1, y1,
    then any keypoint columns).

    Each kept box becomes the score-weighted mean of the boxes it suppresses: steadier than
    keeping the single best anchor. Returns the indices of the kept boxes.
    """
    order = list(np.argsort(-scores))
    kept = []
    while order:
        best = order[0]
        rest = np.array(order)
        ious = _iou_one_to_many(boxes[best], boxes[rest])
        group = rest[ious > iou_threshold]
        group = group if group.size else np.array([best])
        weights = scores[group][:, None]
        boxes[best] = (boxes[group] * weights).sum(axis=0) / weights.sum()
        kept.append(int(best))
        order = [int(i) for i in rest[ious <= iou_threshold] if i != best]
    return kept


def _iou_one_to_many(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


class BlazeFaceDetector:
    """MediaPipe BlazeFace (.tflite) in LiteRT, decoded and suppressed as MediaPipe does.

    The frame is letterboxed (aspect kept) to the model's square input, RGB, in [-1, 1].
    """

    def __init__(self, variant: str = 'blazeface_short', model_dir: Optional[str] = None,
                 min_score: Optional[float] = None, nms_iou: float = 0.3,
                 min_face_px: int = 20, num_threads: int = 1):
        if variant not in _VARIANTS:
            raise ValueError(f'variant must be one of {sorted(_VARIANTS)}, got {variant!r}')
        self.name = variant
        self._variant = _VARIANTS[variant]
        model_dir = model_dir or default_model_dir()
        self.model_path = os.path.join(model_dir, self._variant.file_name)
        if not os.path.isfile(self.model_path):
            raise FileNotFoundError(
                f'face detector model {self.model_path} is missing; {HOW_TO_GET_BLAZEFACE}')
        from ai_edge_litert.interpreter import Interpreter
        try:
            self._interpreter = Interpreter(model_path=self.model_path, num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise RuntimeError(f'face detector model {self.model_path} does not load '
                               f'({error}); {HOW_TO_GET_BLAZEFACE}') from None
        self._input = self._interpreter.get_input_details()[0]['index']
        outputs = sorted(self._interpreter.get_output_details(), key=lambda d: d['shape'][-1])
        self._scores_index, self._boxes_index = outputs[0]['index'], outputs[1]['index']
        size = self._variant.input_size
        self._anchors = _ssd_anchor_centres(size, self._variant.strides,
                                            self._variant.anchors_per_cell)
        self.min_score = self._variant.default_min_score if min_score is None else min_score
        self.nms_iou = nms_iou
        self.min_face_px = min_face_px
        self._tensor = np.zeros((1, size, size, 3), np.float32)

    def detect(self, bgr: np.ndarray) -> List[Detection]:
        height, width = bgr.shape[:2]
        size = self._variant.input_size
        scale = size / max(width, height)
        new_w, new_h = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
        pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
        small = _shrink(bgr, new_w, new_h)
        tensor = self._tensor
        tensor.fill(-1.0)  # letterbox border: black, as MediaPipe's BORDER_ZERO
        inside = tensor[0, pad_y:pad_y + new_h, pad_x:pad_x + new_w]
        inside[...] = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        inside *= 1.0 / 127.5
        inside -= 1.0
        self._interpreter.set_tensor(self._input, tensor)
        self._interpreter.invoke()
        logits = self._interpreter.get_tensor(self._scores_index)[0, :, 0]
        candidates = np.flatnonzero(logits > _logit(self.min_score))
        if candidates.size == 0:
            return []
        raw = self._interpreter.get_tensor(self._boxes_index)[0, candidates, :8] / size
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[candidates], -100.0, 100.0)))
        anchors = self._anchors[candidates]
        centres = anchors + raw[:, :2]
        half = raw[:, 2:4] / 2.0
        # box corners, then the two eye keypoints (MediaPipe's first two: the subject's
        # right eye, the image-left one, then the left), all averaged by the suppression
        corners = np.concatenate([centres - half, centres + half, anchors + raw[:, 4:6],
                                  anchors + raw[:, 6:8]], axis=1)
        kept = weighted_nms(corners, scores, self.nms_iou)
        detections = []
        for index in kept:
            x0, y0, x1, y1, left_x, left_y, right_x, right_y = corners[index]
            # the letterbox is square and uniform: angles in the tensor are those of the image
            roll_deg = float(np.degrees(np.arctan2(right_y - left_y, right_x - left_x)))
            # letterboxed tensor coordinates -> input image pixels, clipped to the image
            x0 = max(0.0, (x0 * size - pad_x) / scale)
            y0 = max(0.0, (y0 * size - pad_y) / scale)
            x1 = min(float(width), (x1 * size - pad_x) / scale)
            y1 = min(float(height), (y1 * size - pad_y) / scale)
            if min(x1 - x0, y1 - y0) >= self.min_face_px:
                detections.append(Detection((float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
                                            float(scores[index]), roll_deg))
        return detections

    def reset(self) -> None:
        """Nothing to forget: each frame is detected on its own."""


class BlazeFaceRangesDetector:
    """Both BlazeFace ranges on every frame, and a tiled search where both find nothing.

    The full-range model finds faces far away but misses most faces that fill the frame
    (it found 33% of 480-pixel faces in the framing benchmark, the short-range model 99%);
    the short-range model misses small faces. Each face is reported once, with the
    short-range box where both found it, except where the short-range box is a loose box
    around a smaller full-range face (a face too small for the short-range model: on a
    1280x720 frame it boxed a 110-pixel face at 210 pixels, which went out as a second face).
    Where neither finds a face, the short-range model looks again at overlapping square
    tiles, coarse to fine down to 1/``search_tiles`` of the frame's shorter side
    (:meth:`_search_tiles`), where a face of 50-150 px in 640x480 is as large as the model
    wants (0 or 1: no such search). A face found in a tile must score ``search_min_score``:
    on textured scenes with nobody in them (the moon, the Hubble deep field) tiles gave
    false faces scoring 0.5-0.65, which the tracker confirms on a still scene like any face.
    Where it finds nothing the search costs about ten whole-frame detections, so it then runs
    only on every ``idle_search_every``-th frame until a face is seen (a face that walks in
    is found at most ``idle_search_every - 1`` frames later). A face of the last frame that
    neither range finds now is first looked for near where it was (:meth:`_look_again`):
    a small face found by the tiles costs one small detection a frame, not a search.
    The detector thus keeps state between frames: give it frames of one
    camera in time order, and :meth:`reset` it before an unrelated frame.
    """

    name = 'blazeface'

    def __init__(self, model_dir: Optional[str] = None, min_score: Optional[float] = None,
                 min_face_px: int = 20, num_threads: int = 1, search_tiles: int = 0,
                 search_min_score: float = 0.7, idle_search_every: int = 1):
        if idle_search_every < 1:
            raise ValueError(f'idle_search_every must be >= 1, got {idle_search_every}')
        self.short = BlazeFaceDetector('blazeface_short', model_dir, min_score,
                                       min_face_px=min_face_px, num_threads=num_threads)
        self.full = BlazeFaceDetector('blazeface_full', model_dir, min_score,
                                      min_face_px=min_face_px, num_threads=num_threads)
        self.search_tiles = search_tiles
        self.search_min_score = search_min_score
        self.idle_search_every = idle_search_every
        self._frames_to_search = 0  # frames until the next tiled search while none finds
        self._previous: List[Detection] = []  # the last frame's faces

    def detect(self, bgr: np.ndarray) -> List[Detection]:
        found = self.short.detect(bgr)
        for face in self.full.detect(bgr):
            if _overlaps_any(face, found):
                continue
            loose = next((i for i, short in enumerate(found) if _lies_within(face, short)), None)
            if loose is None:
                found.append(face)
            else:
                found[loose] = face
        found += self._look_again(bgr, found)
        if not found and self.search_tiles >= 2:
            if self._frames_to_search > 0:
                self._frames_to_search -= 1
            else:
                found = self._search_tiles(bgr)
                if not found:
                    self._frames_to_search = self.idle_search_every - 1
        if found:
            self._frames_to_search = 0
        self._previous = found
        return found

    def reset(self) -> None:
        """Forget the last frame's faces and the idle wait (the next frame is unrelated)."""
        self._previous = []
        self._frames_to_search = 0

    def _look_again(self, bgr: np.ndarray, found: List[Detection]) -> List[Detection]:
        """The last frame's faces that neither range finds now, looked for with the
        short-range model in a window about ``LOOK_AGAIN_SCALE`` times their size around
        where they were: a face only the tiles found (too small for a whole-frame
        detection) stays found at the cost of one small detection, not a whole search."""
        height, width = bgr.shape[:2]
        again: List[Detection] = []
        for face in self._previous:
            # found already, perhaps as a loose box around it or a tight box inside it
            if any(_centre_within(face, other) or _centre_within(other, face)
                   for other in found + again):
                continue
            x, y, w, h = face.box
            side = int(min(width, height, max(LOOK_AGAIN_SCALE * max(w, h), LOOK_AGAIN_MIN_PX)))
            left = int(min(max(0, round(x + w / 2 - side / 2)), width - side))
            top = int(min(max(0, round(y + h / 2 - side / 2)), height - side))
            for candidate in self._short_in_window(bgr, left, top, side):
                if _centre_within(candidate, face):
                    again.append(candidate)
                    break
        return again

    def _search_tiles(self, bgr: np.ndarray) -> List[Detection]:
        """Coarse to fine: square tiles of 1/2, 1/3 ... 1/``search_tiles`` of the frame's
        shorter side, each level only where the coarser ones found nothing."""
        height, width = bgr.shape[:2]
        for parts in range(2, self.search_tiles + 1):
            found: List[Detection] = []
            for left, top, side in square_tiles(width, height, min(width, height) // parts):
                for face in self._short_in_window(bgr, left, top, side):
                    if not _overlaps_any(face, found):
                        found.append(face)
            if found:
                return found
        return []

    def _short_in_window(self, bgr: np.ndarray, left: int, top: int,
                         side: int) -> List[Detection]:
        """Short-range faces in a square window of the frame scoring ``search_min_score``,
        in frame pixels."""
        found = []
        for face in self.short.detect(bgr[top:top + side, left:left + side]):
            if face.score >= self.search_min_score:
                x, y, w, h = face.box
                found.append(Detection((x + left, y + top, w, h), face.score, face.roll_deg))
        return found


def square_tiles(width: int, height: int, side: int) -> List[Tuple[int, int, int]]:
    """(left, top, side) of square tiles covering the frame, neighbours ``TILE_STEP`` of a
    side apart: a face up to ``1 - TILE_STEP`` of a side lies whole in one of them."""
    side = max(1, min(side, width, height))
    stride = TILE_STEP * side

    def starts(extent: int) -> np.ndarray:
        count = int(np.ceil((extent - side) / stride)) + 1 if extent > side else 1
        return np.linspace(0, extent - side, count).round().astype(int)

    return [(int(left), int(top), side) for top in starts(height) for left in starts(width)]


#: Neighbouring tiles of the search start this fraction of a tile apart. At 640x480 the
#: levels are 12 tiles of 240 px and 24 of 160 px: on 200 public_test faces in frames,
#: found at 64 px 82.5% and at 96 px 94.5%, against 71.5% and 87.5% with 4x4 tiles 1.3
#: times an even split, which cut faces larger than their 64 px overlap at the seams.
TILE_STEP = 0.7
#: A face lost by both ranges is looked for in a window this many times its size (a
#: 64-pixel face then spans a third of the short-range model's input, where it finds it),
#: and at least this many pixels wide.
LOOK_AGAIN_SCALE = 3.0
LOOK_AGAIN_MIN_PX = 96


def _overlaps_any(face: Detection, others: Sequence[Detection], iou: float = 0.3) -> bool:
    if not others:
        return False
    x, y, w, h = face.box
    boxes = np.array([[o.box[0], o.box[1], o.box[0] + o.box[2], o.box[1] + o.box[3]]
                      for o in others])
    return bool(np.any(_iou_one_to_many(np.array([x, y, x + w, y + h]), boxes) > iou))


def _centre_within(face: Detection, around: Detection) -> bool:
    """Whether ``face``'s centre lies within ``around``'s box (a face that moved a little)."""
    x, y, w, h = face.box
    ox, oy, ow, oh = around.box
    return ox <= x + w / 2 <= ox + ow and oy <= y + h / 2 <= oy + oh


def _lies_within(inner: Detection, outer: Detection, fraction: float = 0.8) -> bool:
    """Whether at least ``fraction`` of ``inner``'s box lies inside ``outer``'s."""
    x, y, w, h = inner.box
    ox, oy, ow, oh = outer.box
    overlap_w = max(0.0, min(x + w, ox + ow) - max(x, ox))
    overlap_h = max(0.0, min(y + h, oy + oh) - max(y, oy))
    return overlap_w * overlap_h >= fraction * w * h


def _shrink(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Downscale with area averaging (small faces keep their detail) at bilinear cost.

    OpenCV's INTER_AREA is fast only for whole factors (1 ms at 640x480 -> 192x144 for a
    factor of 3.3): resize bilinearly to twice the target, then halve by area (0.2 ms).
    """
    if image.shape[1] <= 2 * width:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    double = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(double, (width, height), interpolation=cv2.INTER_AREA)


def _logit(probability: float) -> float:
    probability = min(max(probability, 1e-6), 1 - 1e-6)
    return float(np.log(probability / (1 - probability)))


def create_detector(kind: str = 'auto', model_dir: Optional[str] = None,
                    min_score: Optional[float] = None, min_face_px: int = 40,
                    haar_scale_factor: float = 1.1, haar_min_neighbors: int = 5,
                    haar_max_width: int = 320, num_threads: int = 1, search_tiles: int = 0,
                    search_min_score: float = 0.7, idle_search_every: int = 1):
    """(detector, note): ``note`` explains a fallback from 'auto' to Haar, else ''.

    'auto' is both BlazeFace ranges (:class:`BlazeFaceRangesDetector`) where their model
    files are present, Haar otherwise; a named BlazeFace detector whose model is missing
    raises FileNotFoundError. ``search_tiles``, ``search_min_score`` and ``idle_search_every``
    are for 'blazeface' (and so 'auto') only.
    """
    if kind not in DETECTORS:
        raise ValueError(f'detector must be one of {DETECTORS}, got {kind!r}')
    model_dir = model_dir or default_model_dir()
    if kind == 'auto':
        if all(os.path.isfile(os.path.join(model_dir, variant.file_name))
               for variant in _VARIANTS.values()):
            kind = 'blazeface'
        else:
            note = (f'BlazeFace models not found in {model_dir}: using the slower Haar cascade; '
                    + HOW_TO_GET_BLAZEFACE.replace('or set detector to haar', 'for BlazeFace'))
            return HaarFaceDetector(haar_scale_factor, haar_min_neighbors, min_face_px,
                                    haar_max_width), note
    if kind == 'haar':
        return HaarFaceDetector(haar_scale_factor, haar_min_neighbors, min_face_px,
                                haar_max_width), ''
    if kind == 'blazeface':
        return BlazeFaceRangesDetector(model_dir, min_score, min_face_px, num_threads,
                                       search_tiles, search_min_score,
                                       idle_search_every), ''
    return BlazeFaceDetector(kind, model_dir, min_score, min_face_px=min_face_px,
                             num_threads=num_threads), ''
