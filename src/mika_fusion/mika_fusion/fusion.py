"""Fusion core: per-modality emotion results in, one debounced emotion state out. ROS-free.

Times are seconds in the sensors' time base. The caller passes ``now`` (the node clock, or
bag time in offline evaluation), so the same inputs always give the same states.

- Alignment is by sensor stamp, not arrival: each source (a face track, the voice) keeps its
  newest result *by stamp*, and a result's weight decays with the age of its stamp.
- Weight of a modality = configured weight x its confidence x 0.5 ** (age / half-life);
  results older than ``max_age_s`` are ignored. Whatever is fresh is fused; with nothing
  fresh the state is ``unknown`` with confidence 0.
- Debounce: the fused distribution is smoothed exponentially over time, and the published
  emotion changes only when a rival has beaten it by ``switch_margin`` for ``min_dwell_s``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from mika_common.emotions import (
    EMOTION_LABELS, UNKNOWN, attitude_of, reorder_to_canonical, valence_arousal_of)

FACE = 'face'
VOICE = 'voice'
MODALITIES = (FACE, VOICE)
FACE_SELECTIONS = ('largest', 'most_confident', 'track_id')


class InvalidInput(ValueError):
    """A result the fuser refuses; ``reason`` is a short key counted in diagnostics."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FusionConfig:
    """Tuning of the fusion; the defaults are those of config/perception.yaml."""

    face_weight: float = 1.0
    voice_weight: float = 0.7
    half_life_s: float = 2.0
    max_age_s: float = 6.0
    max_future_s: float = 0.5
    face_selection: str = 'largest'
    target_track_id: int = -1
    smoothing_time_constant_s: float = 0.8
    switch_margin: float = 0.1
    min_dwell_s: float = 0.6
    probability_sum_tolerance: float = 0.05

    def __post_init__(self):
        problems = []
        if self.face_weight < 0 or self.voice_weight < 0:
            problems.append('weights must be >= 0')
        if self.face_weight == 0 and self.voice_weight == 0:
            problems.append('at least one modality weight must be > 0')
        if self.half_life_s <= 0:
            problems.append('half_life_s must be > 0')
        if self.max_age_s <= 0:
            problems.append('max_age_s must be > 0')
        if self.max_future_s < 0:
            problems.append('max_future_s must be >= 0')
        if self.face_selection not in FACE_SELECTIONS:
            problems.append(f'face_selection must be one of {FACE_SELECTIONS}')
        if self.face_selection == 'track_id' and self.target_track_id < 0:
            problems.append("face_selection 'track_id' needs target_track_id >= 0")
        if self.smoothing_time_constant_s < 0 or self.min_dwell_s < 0:
            problems.append('smoothing_time_constant_s and min_dwell_s must be >= 0')
        if not 0 <= self.switch_margin < 1:
            problems.append('switch_margin must be in [0, 1)')
        if not 0 < self.probability_sum_tolerance < 1:
            problems.append('probability_sum_tolerance must be in (0, 1)')
        if problems:
            raise ValueError('; '.join(problems))

    def weight_of(self, modality: str) -> float:
        return self.face_weight if modality == FACE else self.voice_weight


@dataclass(frozen=True)
class Observation:
    """One validated result, probabilities in :data:`EMOTION_LABELS` order."""

    modality: str
    stamp: float
    probabilities: np.ndarray
    confidence: float
    track_id: int = -1
    area: float = 0.0

    @property
    def label(self) -> str:
        return EMOTION_LABELS[int(np.argmax(self.probabilities))]


@dataclass(frozen=True)
class Contribution:
    modality: str
    label: str
    confidence: float
    age: float
    weight: float
    track_id: int


@dataclass(frozen=True)
class FusedState:
    stamp: float
    emotion: str
    confidence: float
    probabilities: Optional[np.ndarray]
    attitude: str
    valence: float
    arousal: float
    since: float
    contributions: List[Contribution] = field(default_factory=list)
    changed: bool = False


def make_observation(modality: str, stamp: float, label_names: Sequence[str],
                     probabilities: Sequence[float], confidence: float, now: float,
                     config: FusionConfig, track_id: int = -1,
                     area: float = 0.0) -> Observation:
    """Validate one result and return it in canonical order, or raise :class:`InvalidInput`."""
    if modality not in MODALITIES:
        raise InvalidInput('unknown_modality', f'unknown modality {modality!r}')
    values = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if len(label_names) != values.size:
        raise InvalidInput('length_mismatch', f'{len(label_names)} label names but '
                           f'{values.size} probabilities')
    if tuple(label_names) == EMOTION_LABELS:
        canonical = values  # the usual case, checked without building lookups
    else:
        try:
            canonical = reorder_to_canonical(label_names, values)
        except ValueError as error:
            raise InvalidInput('unknown_labels', str(error)) from None
    if not np.all(np.isfinite(canonical)) or not math.isfinite(confidence):
        raise InvalidInput('not_finite', 'NaN or infinite probability or confidence')
    if np.any(canonical < 0):
        raise InvalidInput('negative', 'negative probability')
    total = float(canonical.sum())
    if abs(total - 1.0) > config.probability_sum_tolerance:
        raise InvalidInput('bad_sum', f'probabilities sum to {total:.3f}, not 1')
    if not 0.0 <= confidence <= 1.0:
        raise InvalidInput('bad_confidence', f'confidence {confidence} outside [0, 1]')
    if stamp <= 0.0:
        raise InvalidInput('zero_stamp', 'header stamp is zero: the sensor time is unknown')
    if stamp > now + config.max_future_s:
        raise InvalidInput('future_stamp', f'stamp {stamp - now:.2f} s in the future '
                           '(clocks out of sync, or use_sim_time differs between nodes)')
    if now - stamp > config.max_age_s:
        raise InvalidInput('stale', f'stamp {now - stamp:.2f} s old, beyond max_age_s')
    return Observation(modality, float(stamp), canonical / total, float(confidence),
                       int(track_id), float(area))


class EmotionFuser:
    """Holds the newest result per source and turns them into debounced states."""

    def __init__(self, config: FusionConfig):
        self.config = config
        self._faces: Dict[int, Observation] = {}
        self._voice: Optional[Observation] = None
        self._smoothed: Optional[np.ndarray] = None
        self._last_update: Optional[float] = None
        self._emotion = UNKNOWN
        self._since = 0.0
        self._rival: Optional[int] = None
        self._rival_since = 0.0

    def reconfigure(self, config: FusionConfig) -> None:
        self.config = config

    def add(self, observation: Observation) -> bool:
        """Keep ``observation`` if it is the newest of its source by stamp; False if older."""
        if observation.modality == FACE:
            current = self._faces.get(observation.track_id)
            if current is not None and current.stamp > observation.stamp:
                return False
            self._faces[observation.track_id] = observation
        else:
            if self._voice is not None and self._voice.stamp > observation.stamp:
                return False
            self._voice = observation
        return True

    def update(self, now: float) -> FusedState:
        """The state at ``now``."""
        self._forget_stale(now)
        sources = [o for o in (self._selected_face(), self._voice) if o is not None]
        weights = np.array([self.config.weight_of(o.modality) * o.confidence
                            * 0.5 ** (max(0.0, now - o.stamp) / self.config.half_life_s)
                            for o in sources])
        total = float(weights.sum()) if sources else 0.0
        previous = self._emotion
        if total <= 0.0:
            self._smoothed, self._last_update = None, now
            self._emotion, self._rival = UNKNOWN, None
            if previous != UNKNOWN:
                self._since = now
            return FusedState(now, UNKNOWN, 0.0, None, UNKNOWN, 0.0, 0.0, self._since,
                              [], changed=previous != UNKNOWN)
        fused = sum(w * o.probabilities for w, o in zip(weights, sources)) / total
        self._smooth(fused, now)
        self._debounce(now)
        index = EMOTION_LABELS.index(self._emotion)
        valence, arousal = valence_arousal_of(self._emotion)
        contributions = [
            Contribution(o.modality, o.label, o.confidence, max(0.0, now - o.stamp),
                         float(w / total), o.track_id)
            for w, o in zip(weights, sources)]
        return FusedState(now, self._emotion, float(self._smoothed[index]),
                          self._smoothed.copy(), attitude_of(self._emotion), valence,
                          arousal, self._since, contributions,
                          changed=previous != self._emotion)

    def _forget_stale(self, now: float) -> None:
        limit = self.config.max_age_s
        self._faces = {track: o for track, o in self._faces.items() if now - o.stamp <= limit}
        if self._voice is not None and now - self._voice.stamp > limit:
            self._voice = None

    def _selected_face(self) -> Optional[Observation]:
        if not self._faces:
            return None
        policy = self.config.face_selection
        if policy == 'track_id':
            return self._faces.get(self.config.target_track_id)
        if policy == 'most_confident':
            return max(self._faces.values(), key=lambda o: (o.confidence, o.area))
        return max(self._faces.values(), key=lambda o: (o.area, o.confidence))

    def _smooth(self, fused: np.ndarray, now: float) -> None:
        if self._smoothed is None or self._last_update is None:
            self._smoothed = fused.copy()
        else:
            elapsed = max(0.0, now - self._last_update)
            tau = self.config.smoothing_time_constant_s
            alpha = 1.0 if tau == 0 else 1.0 - math.exp(-elapsed / tau)
            self._smoothed += alpha * (fused - self._smoothed)
        self._last_update = now

    def _debounce(self, now: float) -> None:
        leader = int(np.argmax(self._smoothed))
        if self._emotion == UNKNOWN:
            self._emotion, self._since, self._rival = EMOTION_LABELS[leader], now, None
            return
        current = EMOTION_LABELS.index(self._emotion)
        lead = self._smoothed[leader] - self._smoothed[current]
        if leader == current or lead < self.config.switch_margin:
            self._rival = None
            return
        if self._rival != leader:
            self._rival, self._rival_since = leader, now
        if now - self._rival_since >= self.config.min_dwell_s:
            self._emotion, self._since, self._rival = EMOTION_LABELS[leader], self._rival_since, None
