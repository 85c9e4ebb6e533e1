"""The fusion node's and the emotion logger's parameters, and the fusion configuration
they give, without ROS.

The node (:mod:`mika_fusion.fusion_node`) and offline evaluation and tuning
(:mod:`mika_evaluation.node_config`) validate a params file against these lists and turn
it into a :class:`~mika_fusion.fusion.FusionConfig` with :func:`fusion_config`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from mika_common.emotions import EMOTION_LABELS
from mika_common.node_params import ParamSpec
from mika_fusion.fusion import FACE_SELECTIONS, POOLINGS, FusionConfig


def _one_per_class(name: str, values) -> Optional[str]:
    """A class prior needs one value per emotion label, in their order."""
    if len(values) != len(EMOTION_LABELS):
        return f'{name} needs {len(EMOTION_LABELS)} values, one per class, got {len(values)}'
    return None


PARAMETERS = [
    ParamSpec('publish_rate_hz', 10.0, 'Rate at which the state is re-published even when '
              'it does not change (it is also published on every change).',
              min_value=0.2, max_value=100.0, read_only=True),
    ParamSpec('face_weight', 1.0, 'Weight of the face modality.', min_value=0.0, max_value=10.0),
    ParamSpec('voice_weight', 1.0, 'Weight of the voice modality.', min_value=0.0,
              max_value=10.0),
    ParamSpec('half_life_s', 0.5, 'Age (s, by sensor stamp) at which a face result counts '
              'half.', min_value=0.05, max_value=60.0),
    ParamSpec('voice_half_life_s', 0.5, 'Age (s, from the end of its utterance) at which a '
              'voice result counts half.', min_value=0.05, max_value=60.0),
    ParamSpec('pooling', 'log', "How the modalities' distributions are combined: "
              "weighted mean ('linear') or weighted geometric mean ('log').",
              choices=POOLINGS),
    ParamSpec('max_age_s', 6.0, 'Results older than this (s) are ignored.', min_value=0.1,
              max_value=300.0),
    ParamSpec('max_future_s', 0.5, 'Stamps further in the future than this (s) are rejected.',
              min_value=0.0, max_value=10.0),
    ParamSpec('face_selection', 'largest', 'Which face to follow when several are seen.',
              choices=FACE_SELECTIONS),
    ParamSpec('target_track_id', -1, "Track id followed when face_selection is 'track_id'.",
              min_value=-1, max_value=2**31 - 1),
    ParamSpec('face_track_timeout_s', 1.0, 'A face track absent from results newer than its '
              'own by this long (s) is forgotten: the person left.', min_value=0.05,
              max_value=60.0),
    ParamSpec('face_fresh_window_s', 0.25, 'Largest/most_confident selection only considers '
              'faces whose result is at most this much (s) older than the newest face '
              'result: the faces of one frame, not a track that has since ended.',
              min_value=0.0, max_value=60.0),
    ParamSpec('smoothing_time_constant_s', 0.8, 'Time constant (s) of the exponential '
              'smoothing of the fused distribution; 0 disables smoothing.',
              min_value=0.0, max_value=30.0),
    ParamSpec('switch_margin', 0.2, 'Probability by which a rival must beat the current '
              'emotion before the state switches.', min_value=0.0, max_value=0.99),
    ParamSpec('min_dwell_s', 0.15, 'How long (s) the rival must keep that lead.',
              min_value=0.0, max_value=60.0),
    ParamSpec('face_class_prior', list(FusionConfig.face_class_prior), 'Mean face output '
              f'per class ({", ".join(EMOTION_LABELS)}) over class-balanced input; each face '
              'result is divided by it, so the classes the face model over-calls do not win '
              'ties. All equal: no correction.', min_value=0.001, max_value=1000.0,
              validator=lambda v: _one_per_class('face_class_prior', v)),
    ParamSpec('voice_class_prior', list(FusionConfig.voice_class_prior), 'The same for voice '
              'results.',
              min_value=0.001, max_value=1000.0,
              validator=lambda v: _one_per_class('voice_class_prior', v)),
    ParamSpec('probability_sum_tolerance', 0.05, 'Inputs whose probabilities sum further '
              'than this from 1 are rejected.', min_value=0.001, max_value=0.5),
]

EMOTION_LOGGER_PARAMETERS = [
    ParamSpec('stdout', False, 'Also print each change as a plain line on stdout (for '
              'piping into other tools), besides the ROS log.'),
]

CONFIG_FIELDS = {f.name for f in dataclasses.fields(FusionConfig)}


def fusion_config(values: Mapping[str, Any]) -> FusionConfig:
    """The FusionConfig of the node's parameter values (parameters that are not fusion
    settings, such as publish_rate_hz, are left out). FusionConfig raises ValueError for
    an inconsistent combination."""
    return FusionConfig(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in values.items() if k in CONFIG_FIELDS})
