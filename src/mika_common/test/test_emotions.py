import numpy as np
import pytest

from mika_common.emotions import (
    EMOTION_LABELS, VALENCE_AROUSAL, attitude_of, reorder_to_canonical, valence_arousal_of)


def test_seven_labels_each_with_a_valence_arousal_entry_in_range():
    assert len(EMOTION_LABELS) == 7 and len(set(EMOTION_LABELS)) == 7
    assert set(VALENCE_AROUSAL) == set(EMOTION_LABELS)
    for valence, arousal in VALENCE_AROUSAL.values():
        assert -1.0 <= valence <= 1.0 and -1.0 <= arousal <= 1.0


def test_attitude_mapping():
    assert attitude_of('happy') == 'positive'
    assert attitude_of('neutral') == 'neutral'
    assert {attitude_of(e) for e in ('angry', 'disgust', 'fear', 'sad', 'surprise')} == {'negative'}
    assert attitude_of('unknown') == 'unknown'
    assert valence_arousal_of('unknown') == (0.0, 0.0)


def test_reorder_to_canonical_follows_names_not_positions():
    names = list(reversed(EMOTION_LABELS))
    values = np.arange(7, dtype=float)
    canonical = reorder_to_canonical(names, values)
    assert canonical[EMOTION_LABELS.index('neutral')] == 0.0
    assert canonical[EMOTION_LABELS.index('angry')] == 6.0


@pytest.mark.parametrize('names, values, message', [
    (EMOTION_LABELS[:6], [1 / 6] * 6, 'missing'),
    (EMOTION_LABELS, [1 / 6] * 6, '7 label names but 6'),
    (EMOTION_LABELS[:6] + ('calm',), [1 / 7] * 7, "unknown ['calm']"),
    (EMOTION_LABELS[:6] + ('angry',), [1 / 7] * 7, 'once each'),
])
def test_reorder_rejects_bad_label_sets(names, values, message):
    with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]')):
        reorder_to_canonical(names, values)
