"""Face tracking: stable ids, no flicker through missed detections, smoothed boxes.

ROS-free. Detections of consecutive frames are matched to tracks by IoU, or by centre
distance when a face moved fast (optimal assignment). A track is *confirmed* after
``confirm_hits`` matched frames (a one-frame false detection never shows) and dropped after
``max_misses`` consecutive frames without a match (a single missed detection keeps its id
and its rectangle). Boxes are smoothed with a one-euro filter: still faces get a still
rectangle, moving faces are followed with little lag.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mika_perception.detection import Detection

Box = Tuple[float, float, float, float]  # x, y, width, height
#: Frame interval assumed when two frames carry the same stamp.
NOMINAL_FRAME_S = 1.0 / 30.0


@dataclass(frozen=True)
class TrackerConfig:
    """``iou_threshold``: least overlap to match; ``centre_gate``: else the largest centre
    distance, in box sizes, still matched; ``confirm_hits``: matched frames before a track
    is reported; ``max_misses``: consecutive unmatched frames before it is dropped;
    ``min_cutoff_hz`` / ``beta``: one-euro filter (lower cutoff = steadier, higher beta =
    less lag when moving)."""

    iou_threshold: float = 0.3
    centre_gate: float = 0.5
    confirm_hits: int = 2
    max_misses: int = 2
    min_cutoff_hz: float = 0.5
    beta: float = 0.01
    derivative_cutoff_hz: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f'iou_threshold must be in (0, 1], got {self.iou_threshold}')
        if self.centre_gate < 0.0:
            raise ValueError(f'centre_gate must be >= 0, got {self.centre_gate}')
        if self.confirm_hits < 1 or self.max_misses < 0:
            raise ValueError('confirm_hits must be >= 1 and max_misses >= 0')
        if self.min_cutoff_hz <= 0.0 or self.beta < 0.0 or self.derivative_cutoff_hz <= 0.0:
            raise ValueError('min_cutoff_hz and derivative_cutoff_hz must be > 0, beta >= 0')


@dataclass(frozen=True)
class TrackedFace:
    """A confirmed track in this frame.

    ``box`` is smoothed; ``detected`` is False while the track coasts through a missed
    detection (``misses`` frames so far), with the last box. ``roll_deg`` is the last
    detection's eye-line angle (see :class:`Detection`), None where the detector has none.
    """

    track_id: int
    box: Box
    score: float
    detected: bool
    misses: int
    age: int
    roll_deg: Optional[float] = None


class OneEuroFilter:
    """Casiez et al.'s one-euro filter for a vector signal sampled at irregular times."""

    def __init__(self, min_cutoff_hz: float, beta: float, derivative_cutoff_hz: float):
        self.min_cutoff_hz = min_cutoff_hz
        self.beta = beta
        self.derivative_cutoff_hz = derivative_cutoff_hz
        self._value: Optional[np.ndarray] = None
        self._derivative: Optional[np.ndarray] = None
        self._time: Optional[float] = None

    @staticmethod
    def _alpha(cutoff_hz: float, dt: float) -> float:
        tau = 1.0 / (2.0 * math.pi * cutoff_hz)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, value: np.ndarray, time_s: float) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self._value is None:
            self._value, self._derivative, self._time = value, np.zeros_like(value), time_s
            return value
        dt = time_s - self._time
        if not dt > 0.0:  # same or earlier stamp (replayed or duplicated frame)
            dt = NOMINAL_FRAME_S
        derivative = (value - self._value) / dt
        a_d = self._alpha(self.derivative_cutoff_hz, dt)
        self._derivative = a_d * derivative + (1.0 - a_d) * self._derivative
        cutoff = self.min_cutoff_hz + self.beta * np.abs(self._derivative)
        tau = 1.0 / (2.0 * math.pi * cutoff)
        a = 1.0 / (1.0 + tau / dt)
        self._value = a * value + (1.0 - a) * self._value
        self._time = time_s
        return self._value


class _Track:
    def __init__(self, key: int, detection: Detection, time_s: float,
                 config: TrackerConfig):
        self.key = key
        self.track_id = 0  # given when confirmed, so reported ids count 1, 2, 3 ...
        self.raw_box = detection.box
        self.score = detection.score
        self.roll_deg = detection.roll_deg
        self.hits = 1
        self.misses = 0
        self.age = 1
        self.confirmed = config.confirm_hits <= 1
        self._filter = OneEuroFilter(config.min_cutoff_hz, config.beta,
                                     config.derivative_cutoff_hz)
        self.box = _from_centre(self._filter(_to_centre(detection.box), time_s))

    def hit(self, detection: Detection, time_s: float, config: TrackerConfig) -> None:
        self.raw_box = detection.box
        self.score = detection.score
        self.roll_deg = detection.roll_deg
        self.hits += 1
        self.misses = 0
        self.age += 1
        if self.hits >= config.confirm_hits:
            self.confirmed = True
        self.box = _from_centre(self._filter(_to_centre(detection.box), time_s))

    def miss(self) -> None:
        self.misses += 1
        self.age += 1


class FaceTracker:
    """Keeps face tracks across frames; :meth:`update` once per frame, in time order."""

    def __init__(self, config: TrackerConfig = TrackerConfig()):
        self.config = config
        self._tracks: Dict[int, _Track] = {}
        self._next_key = 0
        self._next_id = 1

    def reset(self) -> None:
        self._tracks.clear()

    def update(self, detections: Sequence[Detection], time_s: float) -> List[TrackedFace]:
        """Match ``detections`` of the frame at ``time_s`` (seconds); the confirmed tracks."""
        tracks = list(self._tracks.values())
        matches, unmatched_detections, unmatched_tracks = self._associate(tracks, detections)
        for track_index, detection_index in matches:
            tracks[track_index].hit(detections[detection_index], time_s, self.config)
        for track_index in unmatched_tracks:
            track = tracks[track_index]
            track.miss()
            if not track.confirmed or track.misses > self.config.max_misses:
                del self._tracks[track.key]
        for detection_index in unmatched_detections:
            track = _Track(self._next_key, detections[detection_index], time_s, self.config)
            self._tracks[track.key] = track
            self._next_key += 1
        for track in self._tracks.values():
            if track.confirmed and not track.track_id:
                track.track_id = self._next_id
                self._next_id += 1
        return [TrackedFace(t.track_id, tuple(float(v) for v in t.box), float(t.score),
                            t.misses == 0, t.misses, t.age, t.roll_deg)
                for t in self._tracks.values() if t.confirmed]

    def _associate(self, tracks: List[_Track], detections: Sequence[Detection]):
        if not tracks or not detections:
            return [], list(range(len(detections))), list(range(len(tracks)))
        cost = np.full((len(tracks), len(detections)), np.inf)
        for i, track in enumerate(tracks):
            for j, detection in enumerate(detections):
                iou = box_iou(track.raw_box, detection.box)
                distance = _centre_distance(track.raw_box, detection.box)
                if iou >= self.config.iou_threshold or distance <= self.config.centre_gate:
                    cost[i, j] = (1.0 - iou) + distance
        finite = np.where(np.isfinite(cost), cost, 1e6)
        rows, cols = _least_cost_assignment(finite)
        matches = [(r, c) for r, c in zip(rows, cols) if np.isfinite(cost[r, c])]
        matched_tracks = {r for r, _ in matches}
        matched_detections = {c for _, c in matches}
        return (matches,
                [j for j in range(len(detections)) if j not in matched_detections],
                [i for i in range(len(tracks)) if i not in matched_tracks])


def _least_cost_assignment(cost: np.ndarray):
    """Rows and columns of the least-cost matching. With one track or one detection (one
    face in view) that is the cheapest cell; only more faces need scipy's solver, imported
    then because importing scipy.optimize took 0.7-1.5 s of a (re)starting node."""
    if min(cost.shape) == 1:
        row, col = np.unravel_index(int(np.argmin(cost)), cost.shape)
        return np.array([row]), np.array([col])
    from scipy.optimize import linear_sum_assignment
    return linear_sum_assignment(cost)


def box_iou(a: Box, b: Box) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    inter_w = min(ax1, bx1) - max(a[0], b[0])
    inter_h = min(ay1, by1) - max(a[1], b[1])
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _centre_distance(a: Box, b: Box) -> float:
    """Distance of the centres in units of the mean box side (scale-free gate)."""
    dx = (a[0] + a[2] / 2) - (b[0] + b[2] / 2)
    dy = (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
    size = max(1e-6, (a[2] + a[3] + b[2] + b[3]) / 4)
    return math.hypot(dx, dy) / size


def _to_centre(box: Box) -> np.ndarray:
    x, y, w, h = box
    return np.array([x + w / 2, y + h / 2, w, h])


def _from_centre(values: np.ndarray) -> Box:
    cx, cy, w, h = (float(v) for v in values)
    return (cx - w / 2, cy - h / 2, w, h)
