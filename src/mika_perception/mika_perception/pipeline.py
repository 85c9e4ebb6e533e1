"""One camera frame in, one emotion result per tracked face out: detect, track, classify.

ROS-free. The node, the benchmark and offline evaluation all call :class:`FacePipeline`,
so what is measured and evaluated is what runs. Every stage is timed. Per-track
probabilities can be smoothed over time (exponential, with a time constant in seconds of
the frames' own stamps), which keeps a face's label from flickering between frames.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Protocol, Sequence, Tuple

import cv2
import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_perception.detection import Detection
from mika_perception.tracking import NOMINAL_FRAME_S, Box, FaceTracker

STAGES = ('conversion', 'detection', 'tracking', 'classification')


class FaceDetector(Protocol):
    name: str

    def detect(self, bgr: np.ndarray) -> List[Detection]: ...

    def reset(self) -> None: ...


class FaceClassifier(Protocol):
    model_id: str

    def classify_faces(self, image: np.ndarray, boxes: Sequence[Box],
                       rolls_deg: Optional[Sequence[Optional[float]]] = None
                       ) -> np.ndarray: ...


@dataclass(frozen=True)
class FaceResult:
    """One tracked face: smoothed box in pixels, canonical-order probabilities, and the
    eye-line angle its crop was turned by (see ``Detection.roll_deg``)."""

    track_id: int
    box: Box
    detection_score: float
    detected: bool  # False while the tracker coasts through a missed detection
    probabilities: np.ndarray
    label: str
    confidence: float
    roll_deg: Optional[float] = None


@dataclass(frozen=True)
class FrameResult:
    faces: List[FaceResult]
    timings: Dict[str, float]  # seconds per stage in STAGES
    width: int
    height: int

    @property
    def total_s(self) -> float:
        return sum(self.timings.values())


class FacePipeline:
    """Detector, tracker and classifier, applied in that order to each frame.

    ``probability_time_constant_s``: time constant of the per-track exponential smoothing
    of probabilities (0 disables it: each frame's own probabilities).
    """

    def __init__(self, detector: FaceDetector, tracker: FaceTracker,
                 classifier: FaceClassifier, probability_time_constant_s: float = 0.0):
        if probability_time_constant_s < 0:
            raise ValueError('probability_time_constant_s must be >= 0')
        self.detector = detector
        self.tracker = tracker
        self.classifier = classifier
        self.probability_time_constant_s = probability_time_constant_s
        self._smoothed: Dict[int, Tuple[np.ndarray, float]] = {}

    def process_image(self, image: np.ndarray, time_s: float,
                      conversion_s: float = 0.0) -> FrameResult:
        """One BGR uint8 frame taken at ``time_s`` (seconds; frames in time order)."""
        timings = {'conversion': conversion_s}
        height, width = image.shape[:2]

        start = time.perf_counter()
        detections = self.detector.detect(image)
        timings['detection'] = time.perf_counter() - start

        start = time.perf_counter()
        tracks = self.tracker.update(detections, time_s)
        boxes = [_clip(track.box, width, height) for track in tracks]
        visible = [(track, box) for track, box in zip(tracks, boxes) if box is not None]
        timings['tracking'] = time.perf_counter() - start

        start = time.perf_counter()
        probabilities = (self.classifier.classify_faces(
            image, [box for _, box in visible], [track.roll_deg for track, _ in visible])
                         if visible else np.zeros((0, len(EMOTION_LABELS)), np.float32))
        faces = []
        for (track, box), raw in zip(visible, probabilities):
            smoothed = self._smooth(track.track_id, raw, time_s)
            best = int(np.argmax(smoothed))
            faces.append(FaceResult(track.track_id, box, track.score, track.detected,
                                    smoothed, EMOTION_LABELS[best], float(smoothed[best]),
                                    track.roll_deg))
        live = {track.track_id for track in tracks}
        self._smoothed = {k: v for k, v in self._smoothed.items() if k in live}
        timings['classification'] = time.perf_counter() - start
        return FrameResult(faces, timings, width, height)

    def reset(self) -> None:
        """Forget tracks and smoothing (time jumped back, e.g. a replayed bag)."""
        self.detector.reset()
        self.tracker.reset()
        self._smoothed.clear()

    def _smooth(self, track_id: int, probabilities: np.ndarray, time_s: float) -> np.ndarray:
        probabilities = np.asarray(probabilities, dtype=np.float32)
        previous = self._smoothed.get(track_id)
        if self.probability_time_constant_s > 0 and previous is not None:
            dt = time_s - previous[1]
            if not dt > 0.0:  # same or earlier stamp: count it as one frame, never freeze
                dt = NOMINAL_FRAME_S
            keep = math.exp(-dt / self.probability_time_constant_s)
            probabilities = (keep * previous[0] + (1.0 - keep) * probabilities).astype(
                np.float32)
        self._smoothed[track_id] = (probabilities, time_s)
        return probabilities


def _clip(box: Box, width: int, height: int) -> Optional[Tuple[int, int, int, int]]:
    """The box in whole pixels inside the image, or None when nothing of it is inside."""
    x0, y0 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    x1 = min(width, int(round(box[0] + box[2])))
    y1 = min(height, int(round(box[1] + box[3])))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def annotate(image: np.ndarray, result: FrameResult) -> np.ndarray:
    """A copy of ``image`` with each face's box, id, label and confidence drawn on it."""
    canvas = np.array(image, dtype=np.uint8, copy=True)
    for face in result.faces:
        x, y, w, h = face.box
        colour = (0, 200, 0) if face.detected else (0, 200, 200)  # yellow while coasting
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, 2)
        text = f'#{face.track_id} {face.label} {face.confidence:.2f}'
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(0, y - text_h - baseline - 4)
        cv2.rectangle(canvas, (x, top), (x + text_w + 4, top + text_h + baseline + 4),
                      colour, cv2.FILLED)
        cv2.putText(canvas, text, (x + 2, top + text_h + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
