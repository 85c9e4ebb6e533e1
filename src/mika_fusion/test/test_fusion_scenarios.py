"""Scripted scenarios driving the fusion core; each asserts a measured behaviour."""
import numpy as np
import pytest

from mika_common.emotions import EMOTION_LABELS
from mika_fusion.fusion import (
    FACE, VOICE, EmotionFuser, FusionConfig, InvalidInput, make_observation)

RATE_HZ = 10.0


def noisy_distribution(rng, label, concentration=8.0, strength=0.55):
    """A classifier-like output: ``strength`` of the mass around ``label``, Dirichlet noise."""
    peak = np.full(7, (1.0 - strength) / 6)
    peak[EMOTION_LABELS.index(label)] = strength
    return rng.dirichlet(peak * concentration)


def feed(fuser, config, modality, stamp, probabilities, track_id=1, area=100.0, now=None):
    observation = make_observation(
        modality, stamp, EMOTION_LABELS, probabilities, float(np.max(probabilities)),
        stamp if now is None else now, config, track_id=track_id, area=area)
    fuser.add(observation)


def run(config, labels_at, seconds, seed=0, modality=FACE, start=100.0):
    """Feed one modality at RATE_HZ with noisy outputs of ``labels_at(t)``; the states."""
    rng = np.random.default_rng(seed)
    fuser = EmotionFuser(config)
    states = []
    for step in range(int(seconds * RATE_HZ)):
        t = start + step / RATE_HZ
        feed(fuser, config, modality, t, noisy_distribution(rng, labels_at(t - start)))
        states.append(fuser.update(t))
    return states


def flips(states):
    emotions = [s.emotion for s in states]
    return sum(1 for a, b in zip(emotions, emotions[1:]) if a != b)


def test_debounce_suppresses_flicker_under_noisy_alternating_input():
    """Every other frame leans 'sad' while the person is 'happy': a flickering classifier."""
    def alternating(t):
        return 'happy' if int(t * RATE_HZ) % 2 == 0 else 'sad'

    minutes = 1.0
    debounced = flips(run(FusionConfig(), alternating, 60 * minutes))
    raw = flips(run(FusionConfig(smoothing_time_constant_s=0.0, switch_margin=0.0,
                                 min_dwell_s=0.0), alternating, 60 * minutes))
    assert raw / minutes > 100  # the undebounced output changes most frames
    assert debounced / minutes <= 2


def test_a_real_change_is_followed_after_the_dwell_time_but_within_two_seconds():
    change_at = 10.0
    config = FusionConfig()
    states = run(config, lambda t: 'happy' if t < change_at else 'sad', 20.0)
    assert states[int(change_at * RATE_HZ) - 1].emotion == 'happy'
    switch = next(s.stamp - 100.0 for s in states if s.stamp - 100.0 >= change_at
                  and s.emotion == 'sad')
    delay = switch - change_at
    assert config.min_dwell_s <= delay <= 2.0, delay
    assert states[-1].emotion == 'sad'
    assert flips(states) == 1  # unknown -> happy is not counted: states start at happy


def test_since_tells_when_the_published_emotion_began_to_hold():
    states = run(FusionConfig(), lambda t: 'happy' if t < 5 else 'neutral', 12.0)
    last = states[-1]
    assert last.emotion == 'neutral'
    assert 105.0 <= last.since <= 107.0
    assert last.attitude == 'neutral' and (last.valence, last.arousal) == (0.0, 0.0)


def test_a_stale_modality_drops_out_and_nothing_fresh_gives_unknown():
    config = FusionConfig(max_age_s=3.0)
    fuser = EmotionFuser(config)
    rng = np.random.default_rng(1)
    feed(fuser, config, VOICE, 100.0, noisy_distribution(rng, 'sad'))
    for step in range(50):  # faces for 5 s
        t = 100.0 + step / RATE_HZ
        feed(fuser, config, FACE, t, noisy_distribution(rng, 'happy'))
        state = fuser.update(t)
        modalities = sorted(c.modality for c in state.contributions)
        assert modalities == (['face', 'voice'] if t - 100.0 <= 3.0 else ['face']), t
    assert fuser.update(104.9 + 3.0).emotion == 'happy'
    gone = fuser.update(104.9 + 3.01)
    assert gone.emotion == 'unknown' and gone.confidence == 0.0 and gone.changed
    assert gone.probabilities is None and gone.contributions == []


def test_a_confident_modality_outweighs_an_unsure_one_and_age_decays_weight():
    config = FusionConfig(face_weight=1.0, voice_weight=1.0)
    sure_happy = np.array([0.02, 0.02, 0.02, 0.88, 0.02, 0.02, 0.02])
    unsure_sad = np.array([0.14, 0.14, 0.14, 0.1, 0.2, 0.14, 0.14])
    for first, second in ((FACE, VOICE), (VOICE, FACE)):
        fuser = EmotionFuser(config)
        feed(fuser, config, first, 100.0, sure_happy)
        feed(fuser, config, second, 100.0, unsure_sad)
        state = fuser.update(100.0)
        assert state.emotion == 'happy'
        weights = {c.modality: c.weight for c in state.contributions}
        assert weights[first] > 0.8 and abs(sum(weights.values()) - 1.0) < 1e-9
    # the same two results, but the confident one is three half-lives older
    fuser = EmotionFuser(config)
    feed(fuser, config, FACE, 100.0, sure_happy, now=106.0)
    feed(fuser, config, VOICE, 106.0, np.array([0.02, 0.02, 0.02, 0.02, 0.88, 0.02, 0.02]))
    state = fuser.update(106.0)
    weights = {c.modality: c.weight for c in state.contributions}
    assert state.emotion == 'sad' and weights[VOICE] > 0.85
    assert {c.modality: round(c.age, 6) for c in state.contributions} == {FACE: 6.0, VOICE: 0.0}


@pytest.mark.parametrize('selection, target, expected', [
    ('largest', -1, 'sad'), ('most_confident', -1, 'happy'), ('track_id', 7, 'fear')])
def test_face_selection_policies(selection, target, expected):
    config = FusionConfig(face_selection=selection, target_track_id=target)
    fuser = EmotionFuser(config)
    faces = {3: ('happy', 0.9, 50.0), 5: ('sad', 0.6, 400.0), 7: ('fear', 0.5, 100.0)}
    for track, (label, confidence, area) in faces.items():
        probabilities = np.full(7, (1 - confidence) / 6)
        probabilities[EMOTION_LABELS.index(label)] = confidence
        feed(fuser, config, FACE, 100.0, probabilities, track_id=track, area=area)
    state = fuser.update(100.0)
    assert state.emotion == expected
    assert [c.track_id for c in state.contributions] == [
        {'sad': 5, 'happy': 3, 'fear': 7}[expected]]


def test_order_follows_stamps_not_arrival():
    config = FusionConfig(smoothing_time_constant_s=0.0)
    fuser = EmotionFuser(config)
    newer = np.array([0.02, 0.02, 0.02, 0.88, 0.02, 0.02, 0.02])
    older = np.array([0.88, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02])
    fuser.add(make_observation(FACE, 100.5, EMOTION_LABELS, newer, 0.88, 100.5, config, 1))
    late = make_observation(FACE, 100.2, EMOTION_LABELS, older, 0.88, 100.6, config, 1)
    assert fuser.add(late) is False  # arrived last, but it is older: ignored
    assert fuser.update(100.6).emotion == 'happy'


GOOD = list(np.full(7, 1 / 7))


@pytest.mark.parametrize('kwargs, reason', [
    (dict(label_names=EMOTION_LABELS[:6]), 'length_mismatch'),
    (dict(label_names=EMOTION_LABELS[:6] + ('calm',)), 'unknown_labels'),
    (dict(probabilities=GOOD[:6] + [float('nan')]), 'not_finite'),
    (dict(probabilities=[-0.1, 0.3] + GOOD[2:6] + [2 / 7]), 'negative'),
    (dict(probabilities=[0.5] * 7), 'bad_sum'),
    (dict(confidence=1.5), 'bad_confidence'),
    (dict(stamp=0.0), 'zero_stamp'),
    (dict(stamp=101.0), 'future_stamp'),
    (dict(stamp=80.0), 'stale'),
    (dict(modality='gesture'), 'unknown_modality'),
])
def test_bad_inputs_are_rejected_with_a_reason(kwargs, reason):
    arguments = dict(modality=FACE, stamp=99.9, label_names=EMOTION_LABELS,
                     probabilities=GOOD, confidence=0.5, now=100.0, config=FusionConfig())
    arguments.update(kwargs)
    with pytest.raises(InvalidInput) as raised:
        make_observation(**arguments)
    assert raised.value.reason == reason


def test_probabilities_in_another_label_order_are_reordered():
    config = FusionConfig()
    names = list(reversed(EMOTION_LABELS))
    probabilities = [0.9 if n == 'surprise' else 0.1 / 6 for n in names]
    observation = make_observation(FACE, 100.0, names, probabilities, 0.9, 100.0, config)
    assert observation.label == 'surprise'


@pytest.mark.parametrize('kwargs, message', [
    (dict(half_life_s=0.0), 'half_life_s'),
    (dict(face_weight=0.0, voice_weight=0.0), 'at least one'),
    (dict(face_selection='loudest'), 'face_selection'),
    (dict(face_selection='track_id'), 'target_track_id'),
    (dict(switch_margin=1.0), 'switch_margin'),
])
def test_inconsistent_configurations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FusionConfig(**kwargs)
