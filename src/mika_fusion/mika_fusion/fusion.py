"""Fusion core: per-modality emotion results in, one debounced emotion state out. ROS-free.

Times are seconds in the sensors' time base. The caller passes ``now`` (the node clock, or
bag time in offline evaluation), so the same inputs always give the same states.

- Alignment is by sensor stamp, not arrival: each source (a face track, the voice) keeps its
  newest result *by stamp*, and a result's weight decays with its age. The age of a face
  result is counted from its frame's stamp; that of a voice result from the end of its
  utterance (the header carries the start: a 4 s utterance is fresh evidence when it ends).
- Weight of a modality = configured weight x its confidence x 0.5 ** (age / its half-life);
  results older than ``max_age_s`` are ignored. Whatever is fresh is fused; with nothing
  fresh the state is ``unknown`` with confidence 0.
- Each result is first divided by its model's class prior (its mean output over
  class-balanced input): the face model over-calls angry and under-calls disgust, and
  correcting that lifted fused accuracy on the tuning bags by 6-12 points. The corrected
  distributions are pooled by weighted geometric mean (``pooling`` 'log') by default.
- Debounce: the fused distribution is smoothed exponentially over time, and the published
  emotion changes only when a rival has beaten it by ``switch_margin`` for ``min_dwell_s``.
- Face tracks die: a track absent from face results newer than its own by more than
  ``face_track_timeout_s`` is forgotten, so a person who left is not followed for
  ``max_age_s`` while another is in view.
- Only current faces are selected: with ``largest`` or ``most_confident``, a face whose
  result is older than the newest face result by more than ``face_fresh_window_s`` is
  passed over. The face pipeline reports every live track in every frame (coasting ones
  too), so such a face is a track the tracker dropped or restarted, not a missed
  detection; its last (larger, surer) result must not outvote the current frame for the
  rest of ``face_track_timeout_s``. The window only spans the faces of one frame, which
  arrive one message at a time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mika_common.echo import echo
from mika_common.emotions import (
    EMOTION_LABELS, UNKNOWN, attitude_of, reorder_to_canonical, valence_arousal_of)

FACE = 'face'
VOICE = 'voice'
MODALITIES = (FACE, VOICE)
FACE_SELECTIONS = ('largest', 'most_confident', 'track_id')
POOLINGS = ('linear', 'log')
#: Probability floor of log pooling: one modality's near-zero cannot veto a class outright.
LOG_POOL_FLOOR = 1e-3


class InvalidInput(ValueError):
    """A result the fuser refuses; ``reason`` is a short key counted in diagnostics."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FusionConfig:
    """Tuning of the fusion; the defaults are those of config/perception.yaml."""

    face_weight: float = 1.0
    voice_weight: float = 1.0
    half_life_s: float = 0.5
    voice_half_life_s: float = 0.5
    pooling: str = 'log'
    max_age_s: float = 6.0
    max_future_s: float = 0.5
    face_selection: str = 'largest'
    target_track_id: int = -1
    face_track_timeout_s: float = 1.0
    face_fresh_window_s: float = 0.25
    smoothing_time_constant_s: float = 0.8
    switch_margin: float = 0.2
    min_dwell_s: float = 0.15
    probability_sum_tolerance: float = 0.05
    face_class_prior: Tuple[float, ...] = (0.206, 0.058, 0.133, 0.153, 0.167, 0.135, 0.148)
    voice_class_prior: Tuple[float, ...] = (0.150, 0.130, 0.203, 0.156, 0.102, 0.155, 0.104)

    def __post_init__(self):
        problems = []
        for name in ('face_class_prior', 'voice_class_prior'):
            prior = getattr(self, name)
            if len(prior) != len(EMOTION_LABELS) or min(prior) <= 0:
                problems.append(f'{name} must be {len(EMOTION_LABELS)} values > 0 '
                                f'({", ".join(EMOTION_LABELS)})')
        if self.face_weight < 0 or self.voice_weight < 0:
            problems.append('weights must be >= 0')
        if self.face_weight == 0 and self.voice_weight == 0:
            problems.append('at least one modality weight must be > 0')
        if self.half_life_s <= 0 or self.voice_half_life_s <= 0:
            problems.append('half_life_s and voice_half_life_s must be > 0')
        if self.pooling not in POOLINGS:
            problems.append(f'pooling must be one of {POOLINGS}')
        if self.max_age_s <= 0:
            problems.append('max_age_s must be > 0')
        if self.max_future_s < 0:
            problems.append('max_future_s must be >= 0')
        if self.face_selection not in FACE_SELECTIONS:
            problems.append(f'face_selection must be one of {FACE_SELECTIONS}')
        if self.face_selection == 'track_id' and self.target_track_id < 0:
            problems.append("face_selection 'track_id' needs target_track_id >= 0")
        if self.face_track_timeout_s <= 0:
            problems.append('face_track_timeout_s must be > 0')
        if self.face_fresh_window_s < 0:
            problems.append('face_fresh_window_s must be >= 0')
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

    def half_life_of(self, modality: str) -> float:
        return self.half_life_s if modality == FACE else self.voice_half_life_s

    def prior_of(self, modality: str) -> np.ndarray:
        return np.asarray(self.face_class_prior if modality == FACE else
                          self.voice_class_prior, dtype=np.float64)


@dataclass(frozen=True)
class Observation:
    """One validated result, probabilities in :data:`EMOTION_LABELS` order.

    ``stamp`` is the sensor time the evidence is current at, from which its age counts:
    the frame's stamp for a face, the utterance's end for a voice (its header stamp when
    the end is not given).
    """

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
                     config: FusionConfig, track_id: int = -1, area: float = 0.0,
                     utterance_start: float = 0.0,
                     utterance_end: float = 0.0) -> Observation:
    """Validate one result and return it in canonical order, or raise :class:`InvalidInput`.

    ``stamp`` is the header's sensor stamp; for voice, ``utterance_start``/``utterance_end``
    (0 when not given) locate the utterance, and its end is when the evidence is current.
    """
    if modality not in MODALITIES:
        raise InvalidInput('unknown_modality', f'unknown modality {echo(modality)}')
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
    total = float(canonical.sum())  # NaN or infinite when any entry is
    if not math.isfinite(total) or not math.isfinite(confidence):
        raise InvalidInput('not_finite', 'NaN or infinite probability or confidence')
    if canonical.min() < 0.0:
        raise InvalidInput('negative', 'negative probability')
    if abs(total - 1.0) > config.probability_sum_tolerance:
        raise InvalidInput('bad_sum', f'probabilities sum to {total:.3f}, not 1')
    if not 0.0 <= confidence <= 1.0:
        raise InvalidInput('bad_confidence', f'confidence {confidence} outside [0, 1]')
    if stamp <= 0.0:
        raise InvalidInput('zero_stamp', 'header stamp is zero: the sensor time is unknown')
    current_at = stamp
    if modality == VOICE and (utterance_start or utterance_end):
        if not 0.0 < utterance_start <= utterance_end:
            raise InvalidInput('bad_utterance', f'utterance from {utterance_start:.3f} to '
                               f'{utterance_end:.3f}: not a time span')
        current_at = utterance_end
    if current_at > now + config.max_future_s:
        raise InvalidInput('future_stamp', f'stamp {current_at - now:.2f} s in the future '
                           '(clocks out of sync, or use_sim_time differs between nodes)')
    if now - current_at > config.max_age_s:
        raise InvalidInput('stale', f'stamp {now - current_at:.2f} s old, beyond max_age_s')
    return Observation(modality, float(current_at), canonical / total, float(confidence),
                       int(track_id), float(area))


class EmotionFuser:
    """Holds the newest result per source and turns them into debounced states."""

    def __init__(self, config: FusionConfig):
        self.config = config
        self.backward_jumps = 0
        self.reset()

    def reset(self) -> None:
        """Forget every result and the state, as at start."""
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
        previous = self._emotion
        if self._last_update is not None and now < self._last_update - self.config.max_future_s:
            self.reset()  # time went back (a replayed bag restarted): the past is another run
            self.backward_jumps += 1
        self._forget_stale(now)
        sources = [o for o in (self._selected_face(), self._voice) if o is not None]
        weights = [self.config.weight_of(o.modality) * o.confidence
                   * 0.5 ** (max(0.0, now - o.stamp) / self.config.half_life_of(o.modality))
                   for o in sources]
        total = sum(weights)
        if total <= 0.0:
            if previous != UNKNOWN or self._last_update is None:
                self._since = now  # unknown since now, or since the first update
            self._smoothed, self._last_update = None, now
            self._emotion, self._rival = UNKNOWN, None
            return FusedState(now, UNKNOWN, 0.0, None, UNKNOWN, 0.0, 0.0, self._since,
                              [], changed=previous != UNKNOWN)
        corrected = [source.probabilities / self.config.prior_of(source.modality)
                     for source in sources]
        self._smooth(self._pool([c / c.sum() for c in corrected], weights, total), now)
        self._debounce(now)
        valence, arousal = valence_arousal_of(self._emotion)
        contributions = [
            Contribution(o.modality, o.label, o.confidence, max(0.0, now - o.stamp),
                         w / total, o.track_id)
            for w, o in zip(weights, sources)]
        return FusedState(now, self._emotion,
                          float(self._smoothed[EMOTION_LABELS.index(self._emotion)]),
                          self._smoothed.copy(), attitude_of(self._emotion), valence,
                          arousal, self._since, contributions,
                          changed=previous != self._emotion)

    def _pool(self, distributions: Sequence[np.ndarray], weights: Sequence[float],
              total: float) -> np.ndarray:
        """Weighted mean of the distributions ('linear'), or their weighted geometric mean
        ('log'): a class that one modality finds unlikely stays unlikely, where the linear
        mean lets the other modality's guess through."""
        if self.config.pooling == 'linear':
            return sum(d * (weight / total) for weight, d in zip(weights, distributions))
        logs = sum(np.log(np.maximum(d, LOG_POOL_FLOOR)) * (weight / total)
                   for weight, d in zip(weights, distributions))
        fused = np.exp(logs - logs.max())
        return fused / fused.sum()

    def _forget_stale(self, now: float) -> None:
        oldest = now - self.config.max_age_s
        if self._faces:
            newest_face = max(o.stamp for o in self._faces.values())
            oldest_live = max(oldest, newest_face - self.config.face_track_timeout_s)
            self._faces = {track: o for track, o in self._faces.items()
                           if o.stamp >= oldest_live}
        if self._voice is not None and self._voice.stamp < oldest:
            self._voice = None

    def _selected_face(self) -> Optional[Observation]:
        if not self._faces:
            return None
        policy = self.config.face_selection
        if policy == 'track_id':
            return self._faces.get(self.config.target_track_id)
        newest = max(o.stamp for o in self._faces.values())
        current = [o for o in self._faces.values()
                   if o.stamp >= newest - self.config.face_fresh_window_s]
        if policy == 'most_confident':
            return max(current, key=lambda o: (o.confidence, o.area))
        return max(current, key=lambda o: (o.area, o.confidence))

    def _smooth(self, fused: np.ndarray, now: float) -> None:
        if self._smoothed is None or self._last_update is None:
            self._smoothed = fused
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
            self._emotion, self._since = EMOTION_LABELS[leader], self._rival_since
            self._rival = None
