"""The emotion label set, defined once for every package, model file and message.

ROS-free: training tools and tests import it without rclpy.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from mika_common.echo import echo

#: Canonical class order. Models store their own label order; results are always
#: reordered into this one before they leave a node (see :func:`reorder_to_canonical`).
EMOTION_LABELS: Tuple[str, ...] = (
    'angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')

UNKNOWN = 'unknown'

ATTITUDE_POSITIVE = 'positive'
ATTITUDE_NEUTRAL = 'neutral'
ATTITUDE_NEGATIVE = 'negative'

#: Circumplex coordinates (valence, arousal), each in [-1, 1]. Placed after Russell's
#: circumplex model of affect (1980) and the FER/HRI convention used by ROS4HRI's
#: hri_msgs/Expression: happy is pleasant and moderately activated, sad unpleasant and
#: deactivated, anger and fear unpleasant and highly activated, surprise activated and
#: mildly pleasant, disgust unpleasant with moderate activation, neutral at the origin.
VALENCE_AROUSAL: Dict[str, Tuple[float, float]] = {
    'angry': (-0.6, 0.8),
    'disgust': (-0.7, 0.35),
    'fear': (-0.65, 0.75),
    'happy': (0.8, 0.5),
    'sad': (-0.7, -0.4),
    'surprise': (0.2, 0.85),
    'neutral': (0.0, 0.0),
}


def attitude_of(emotion: str) -> str:
    """Happy is positive, neutral is neutral, every other emotion is negative."""
    if emotion == 'happy':
        return ATTITUDE_POSITIVE
    if emotion == 'neutral':
        return ATTITUDE_NEUTRAL
    if emotion in EMOTION_LABELS:
        return ATTITUDE_NEGATIVE
    return UNKNOWN


def valence_arousal_of(emotion: str) -> Tuple[float, float]:
    """Table lookup; (0, 0) for unknown."""
    return VALENCE_AROUSAL.get(emotion, (0.0, 0.0))


def reorder_to_canonical(label_names: Sequence[str], probabilities) -> np.ndarray:
    """Return ``probabilities`` rearranged into :data:`EMOTION_LABELS` order.

    Raises ``ValueError`` when the names are not exactly the seven labels (in any order)
    or when the arrays differ in length.
    """
    names = list(label_names)
    values = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if len(names) != values.size:
        raise ValueError(
            f'{len(names)} label names but {values.size} probabilities')
    if sorted(names) != sorted(EMOTION_LABELS):
        unknown = sorted(set(names) - set(EMOTION_LABELS))
        missing = sorted(set(EMOTION_LABELS) - set(names))
        raise ValueError(
            f'label names must be the seven emotions once each; '
            f'unknown {echo(unknown)}, missing {missing}')
    index = {name: i for i, name in enumerate(names)}
    return values[[index[name] for name in EMOTION_LABELS]]
