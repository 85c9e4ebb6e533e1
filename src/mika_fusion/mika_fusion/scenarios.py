"""Scripted input for the fusion core: classifier-like noisy results over simulated time.

ROS-free. The scenario tests assert on these runs and the benchmark reports the same
measurements (flips per minute, delay before a real change is followed), so both describe
one behaviour.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_fusion.fusion import FACE, EmotionFuser, FusedState, FusionConfig, make_observation

START_S = 100.0


def noisy_distribution(rng: np.random.Generator, mix: Dict[str, float],
                       concentration: float = 20.0) -> np.ndarray:
    """A probability vector drawn from a Dirichlet whose mean puts ``mix`` on its labels.

    The rest of the mass is spread evenly over the other labels. ``concentration`` sets how
    noisy the draws are (lower: noisier); 20 gives frame-to-frame spreads like those of a
    FER-2013 classifier on a steady face.
    """
    others = [label for label in EMOTION_LABELS if label not in mix]
    rest = max(1.0 - sum(mix.values()), 0.02)
    mean = np.array([mix.get(label, rest / len(others)) for label in EMOTION_LABELS])
    return rng.dirichlet(mean / mean.sum() * concentration)


def peaked(label: str, strength: float = 0.55) -> Dict[str, float]:
    """A mix with ``strength`` on one label."""
    return {label: strength}


def simulate(config: FusionConfig, mix_at: Callable[[float], Dict[str, float]],
             seconds: float, rate_hz: float = 10.0, seed: int = 0, modality: str = FACE,
             concentration: float = 20.0) -> List[FusedState]:
    """Feed one modality at ``rate_hz`` with noisy results of ``mix_at(t)`` (t from 0);
    the fused state after each result. The simulated classifier has the bias the config's
    class prior of that modality says the real one has (the fusion divides it out)."""
    rng = np.random.default_rng(seed)
    fuser = EmotionFuser(config)
    bias = config.prior_of(modality) / np.mean(config.prior_of(modality))
    states = []
    for step in range(int(round(seconds * rate_hz))):
        t = step / rate_hz
        probabilities = noisy_distribution(rng, mix_at(t), concentration) * bias
        probabilities /= probabilities.sum()
        fuser.add(make_observation(modality, START_S + t, EMOTION_LABELS, probabilities,
                                   float(probabilities.max()), START_S + t, config,
                                   track_id=1, area=100.0))
        states.append(fuser.update(START_S + t))
    return states


def flips(states: List[FusedState]) -> int:
    """Changes of the published emotion between known emotions (unknown -> x not counted)."""
    emotions = [s.emotion for s in states if s.emotion != 'unknown']
    return sum(1 for a, b in zip(emotions, emotions[1:]) if a != b)


def follow_delay(states: List[FusedState], change_at_s: float,
                 new_emotion: str) -> Optional[float]:
    """Seconds from ``change_at_s`` until the published emotion became ``new_emotion`` and
    stayed; None if it never did."""
    settled = None
    for state in states:
        t = state.stamp - START_S
        if t < change_at_s:
            continue
        if state.emotion == new_emotion:
            settled = t if settled is None else settled
        else:
            settled = None
    return None if settled is None else settled - change_at_s


UNDEBOUNCED = dict(smoothing_time_constant_s=0.0, switch_margin=0.0, min_dwell_s=0.0)
#: The steady-person promise: at most this many flips in a minute of each flicker scenario
#: (seeds 0 and 1), and a real change followed within ``MAX_FOLLOW_S``.
MAX_STEADY_FLIPS = 1
MAX_FOLLOW_S = 2.0


def flicker_scenarios() -> Dict[str, Callable[[float], Dict[str, float]]]:
    """Input whose true emotion does not change but whose per-frame top label does."""
    def alternating(t):  # every other frame leans the other way
        return peaked('happy') if int(round(t * 10)) % 2 == 0 else peaked('sad')

    def ambiguous(t):  # a face between happy and neutral
        return {'happy': 0.42, 'neutral': 0.38}

    bursts = np.random.default_rng(7).random(10_000) < 0.15

    def misfires(t):  # happy, with 15 % of frames misread as angry
        return peaked('angry', 0.6) if bursts[int(round(t * 10))] else peaked('happy')

    return {'alternating happy/sad frames': alternating,
            'ambiguous happy/neutral face': ambiguous,
            'happy with 15% misread frames': misfires}


def happy_then_sad(t: float) -> Dict[str, float]:
    """A real change at 10 s."""
    return peaked('happy') if t < 10.0 else peaked('sad')


def stability_problem(config: FusionConfig) -> Optional[str]:
    """Why ``config`` breaks the steady-person promise, or None: more than
    ``MAX_STEADY_FLIPS`` flips in a minute of a flicker scenario, or a real change not
    followed within ``MAX_FOLLOW_S`` (the tests hold the defaults to it, and tune_fusion
    does not choose parameters that break it)."""
    for name, mix_at in flicker_scenarios().items():
        for seed in (0, 1):
            count = flips(simulate(config, mix_at, 60.0, seed=seed))
            if count > MAX_STEADY_FLIPS:
                return f'{count} flips in a minute of "{name}" (seed {seed})'
    for seed in range(5):
        delay = follow_delay(simulate(config, happy_then_sad, 20.0, seed=seed), 10.0, 'sad')
        if delay is None or delay > MAX_FOLLOW_S:
            return f'a change from happy to sad followed after {delay} s (seed {seed})'
    return None
