"""Scripted scenarios driving the fusion core; each asserts a measured behaviour.

Inputs are classifier-like: probability vectors drawn from a Dirichlet around the true
emotion with a seeded generator (see :mod:`mika_fusion.scenarios`).
"""
import numpy as np
import pytest

from mika_common.emotions import EMOTION_LABELS
from mika_fusion.fusion import (
    FACE, VOICE, EmotionFuser, FusionConfig, InvalidInput, make_observation)
from mika_fusion.scenarios import (
    UNDEBOUNCED, flicker_scenarios, flips, follow_delay, happy_then_sad, noisy_distribution,
    peaked, simulate, stability_problem)

RATE_HZ = 10.0


def feed(fuser, config, modality, stamp, probabilities, track_id=1, area=100.0, now=None,
         **utterance):
    observation = make_observation(
        modality, stamp, EMOTION_LABELS, probabilities, float(np.max(probabilities)),
        stamp if now is None else now, config, track_id=track_id, area=area, **utterance)
    return fuser.add(observation)


def one_hot(label, confidence=0.88):
    probabilities = np.full(7, (1.0 - confidence) / 6)
    probabilities[EMOTION_LABELS.index(label)] = confidence
    return probabilities


@pytest.mark.parametrize('scenario', sorted(flicker_scenarios()))
@pytest.mark.parametrize('seed', [0, 1])
def test_debounce_suppresses_flicker_of_a_steady_emotion(scenario, seed):
    """One minute of a steady person read by a flickering classifier: flips per minute."""
    mix_at = flicker_scenarios()[scenario]
    debounced = flips(simulate(FusionConfig(), mix_at, 60.0, seed=seed))
    raw = flips(simulate(FusionConfig(**UNDEBOUNCED), mix_at, 60.0, seed=seed))
    assert raw >= 100, raw  # the top label per frame changes well over 100 times a minute
    assert debounced <= 1, debounced


def test_a_real_change_is_followed_after_the_dwell_time_but_within_two_seconds():
    config = FusionConfig()
    for seed in range(5):
        states = simulate(config, happy_then_sad, 20.0, seed=seed)
        assert states[int(10.0 * RATE_HZ) - 1].emotion == 'happy'
        delay = follow_delay(states, 10.0, 'sad')
        assert delay is not None and config.min_dwell_s <= delay <= 2.0, (seed, delay)
        assert flips(states) == 1


def test_the_stability_check_passes_the_defaults_and_names_what_breaks_it():
    assert stability_problem(FusionConfig()) is None
    lighter = stability_problem(FusionConfig(switch_margin=0.1, min_dwell_s=0.0))
    assert lighter is not None and 'alternating happy/sad frames' in lighter
    sluggish = stability_problem(FusionConfig(smoothing_time_constant_s=5.0))
    assert sluggish is not None and 'followed after' in sluggish


def test_real_changes_every_five_seconds_are_all_followed():
    labels = ['happy', 'sad', 'surprise', 'neutral']
    states = simulate(FusionConfig(), lambda t: peaked(labels[int(t // 5) % 4]), 60.0)
    assert flips(states) == 11  # 12 segments, every boundary followed, nothing else
    for segment in range(12):  # each segment's end shows its own emotion
        assert states[segment * 50 + 49].emotion == labels[segment % 4]


def test_without_dwell_or_margin_the_same_change_is_followed_at_once_but_flickers():
    states = simulate(FusionConfig(switch_margin=0.0, min_dwell_s=0.0),
                      lambda t: peaked('happy', 0.45) if t < 10.0 else peaked('sad', 0.45),
                      20.0, seed=3, concentration=8.0)
    assert flips(states) > 1  # the debounce parameters are what keeps it at one


def test_since_tells_when_the_published_emotion_began_to_hold():
    states = simulate(FusionConfig(),
                      lambda t: peaked('happy') if t < 5 else peaked('neutral'), 12.0)
    last = states[-1]
    assert last.emotion == 'neutral'
    assert 105.0 <= last.since <= 107.0
    assert last.attitude == 'neutral' and (last.valence, last.arousal) == (0.0, 0.0)


def test_a_stale_modality_drops_out_and_nothing_fresh_gives_unknown():
    config = FusionConfig(max_age_s=3.0)
    fuser = EmotionFuser(config)
    rng = np.random.default_rng(1)
    feed(fuser, config, VOICE, 100.0, noisy_distribution(rng, peaked('sad')))
    for step in range(50):  # faces for 5 s
        t = 100.0 + step / RATE_HZ
        feed(fuser, config, FACE, t, noisy_distribution(rng, peaked('happy')))
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


def test_a_target_track_that_is_not_in_view_contributes_nothing():
    config = FusionConfig(face_selection='track_id', target_track_id=9)
    fuser = EmotionFuser(config)
    feed(fuser, config, FACE, 100.0, one_hot('happy'), track_id=3)
    feed(fuser, config, VOICE, 100.0, one_hot('sad'))
    state = fuser.update(100.0)
    assert state.emotion == 'sad' and [c.modality for c in state.contributions] == [VOICE]


def test_a_face_track_that_left_is_forgotten_and_the_remaining_face_followed():
    """Two people; the larger (sad, track 5) leaves at 2 s, the smaller (happy) stays."""
    config = FusionConfig()
    fuser = EmotionFuser(config)
    rng = np.random.default_rng(4)
    followed = {}
    for step in range(60):
        t = 100.0 + step / RATE_HZ
        if t < 102.0:
            feed(fuser, config, FACE, t, noisy_distribution(rng, peaked('sad')), 5, 400.0)
        feed(fuser, config, FACE, t, noisy_distribution(rng, peaked('happy')), 3, 90.0)
        state = fuser.update(t)
        followed[round(t - 100.0, 1)] = (state.contributions[0].track_id, state.emotion)
    assert followed[1.9] == (5, 'sad')
    # the pipeline reports coasting tracks, so a track missing from newer frames is gone:
    # the remaining face is followed once face_fresh_window_s has passed
    assert followed[round(1.9 + config.face_fresh_window_s + 0.1, 1)][0] == 3
    assert followed[5.9] == (3, 'happy')


@pytest.mark.parametrize('selection', ['largest', 'most_confident'])
def test_a_stale_face_result_does_not_win_over_the_current_frame(selection):
    """The tracker restarts a person's track (new id, a slightly smaller smoothed box) as
    they turn happy: the old track's last, larger and surer result must not be followed
    for the second it is kept (face_track_timeout_s) while the fresh one is there."""
    config = FusionConfig(face_selection=selection, smoothing_time_constant_s=0.0,
                          min_dwell_s=0.0)
    fuser = EmotionFuser(config)
    feed(fuser, config, FACE, 100.0, one_hot('sad', 0.95), track_id=5, area=400.0)
    assert fuser.update(100.0).emotion == 'sad'
    followed = []
    for step in range(1, 10):  # 0.1 .. 0.9 s: inside face_track_timeout_s (1 s)
        t = 100.0 + step / RATE_HZ
        feed(fuser, config, FACE, t, one_hot('happy', 0.8), track_id=9, area=380.0)
        state = fuser.update(t)
        followed.append((round(t - 100.0, 1), state.contributions[0].track_id,
                         state.emotion))
    fresh = [(t, track, emotion) for t, track, emotion in followed
             if t > config.face_fresh_window_s]
    assert fresh and all(track == 9 and emotion == 'happy' for _, track, emotion in fresh), \
        followed


def test_faces_of_one_frame_arriving_one_by_one_keep_the_selection_steady():
    """Each face is its own message: the larger face of the previous frame stays eligible
    until its own result of the new frame arrives (within face_fresh_window_s)."""
    config = FusionConfig()
    fuser = EmotionFuser(config)
    followed = []
    for step in range(30):
        t = 100.0 + step / 15.0  # 15 FPS
        feed(fuser, config, FACE, t, one_hot('happy'), track_id=3, area=90.0)
        followed.append(fuser.update(t).contributions[0].track_id)
        feed(fuser, config, FACE, t, one_hot('sad'), track_id=5, area=400.0)
        followed.append(fuser.update(t).contributions[0].track_id)
    assert set(followed[1:]) == {5}  # the first update saw only the small face


def test_voice_age_counts_from_the_end_of_the_utterance():
    config = FusionConfig(max_age_s=3.0)
    fuser = EmotionFuser(config)
    # a 5 s utterance, classified 0.4 s after it ended: older than max_age_s by its start
    assert feed(fuser, config, VOICE, 100.0, one_hot('angry'), now=105.4,
                utterance_start=100.0, utterance_end=105.0)
    state = fuser.update(105.4)
    assert state.emotion == 'angry'
    assert round(state.contributions[0].age, 6) == 0.4
    later = fuser.update(108.1)  # 3.1 s after its end
    assert later.emotion == 'unknown'


def test_out_of_order_results_keep_the_newest_per_source():
    config = FusionConfig(smoothing_time_constant_s=0.0)
    fuser = EmotionFuser(config)
    assert feed(fuser, config, VOICE, 100.0, one_hot('happy'), now=104.2,
                utterance_start=100.0, utterance_end=104.0)
    # an earlier, shorter utterance whose classification finished later
    assert not feed(fuser, config, VOICE, 101.0, one_hot('sad'), now=104.3,
                    utterance_start=101.0, utterance_end=102.0)
    # another face track's older frame is not compared with this track's
    assert feed(fuser, config, FACE, 104.1, one_hot('happy'), track_id=1, now=104.3)
    assert feed(fuser, config, FACE, 104.0, one_hot('happy'), track_id=2, now=104.3)
    assert not feed(fuser, config, FACE, 103.9, one_hot('sad'), track_id=1, now=104.3)
    state = fuser.update(104.3)
    assert state.emotion == 'happy'
    assert {c.label for c in state.contributions} == {'happy'}


def test_fusion_starts_again_after_unknown():
    config = FusionConfig(max_age_s=1.0)
    fuser = EmotionFuser(config)
    feed(fuser, config, FACE, 100.0, one_hot('happy'))
    assert fuser.update(100.0).emotion == 'happy'
    assert fuser.update(101.5).emotion == 'unknown'
    feed(fuser, config, FACE, 110.0, one_hot('fear'))
    state = fuser.update(110.0)
    assert (state.emotion, state.since, state.changed) == ('fear', 110.0, True)
    assert state.attitude == 'negative' and state.valence < 0 < state.arousal


def test_nothing_at_start_is_unknown_since_the_first_update():
    state = EmotionFuser(FusionConfig()).update(50.0)
    assert (state.emotion, state.confidence, state.since, state.changed) == (
        'unknown', 0.0, 50.0, False)


def test_a_clock_that_goes_back_resets_the_state():
    """A replayed bag that loops: sim time jumps back, the old results are not 'future'."""
    config = FusionConfig()
    fuser = EmotionFuser(config)
    feed(fuser, config, FACE, 200.0, one_hot('happy'))
    assert fuser.update(200.0).emotion == 'happy'
    back = fuser.update(100.0)
    assert (back.emotion, back.changed, fuser.backward_jumps) == ('unknown', True, 1)
    assert feed(fuser, config, FACE, 100.1, one_hot('sad'))
    assert fuser.update(100.1).emotion == 'sad'
    fuser.update(100.1 - config.max_future_s / 2)  # jitter within tolerance is no jump
    assert fuser.backward_jumps == 1


def test_reconfiguring_keeps_the_state_and_applies_the_new_weights():
    fuser = EmotionFuser(FusionConfig(smoothing_time_constant_s=0.0, voice_weight=0.35))
    config = fuser.config
    feed(fuser, config, FACE, 100.0, one_hot('happy', 0.6))
    feed(fuser, config, VOICE, 100.0, one_hot('angry', 0.6))
    before = fuser.update(100.0)  # the face outweighs the voice
    fuser.reconfigure(FusionConfig(smoothing_time_constant_s=0.0, voice_weight=0.35,
                                   face_weight=0.0))
    after = fuser.update(100.1)
    assert before.emotion == 'happy' and after.emotion == 'happy'  # dwell not yet over
    assert {c.modality: c.weight for c in after.contributions}[VOICE] == 1.0
    assert fuser.update(100.8).emotion == 'angry'


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
    (dict(modality=VOICE, utterance_start=99.9, utterance_end=99.0), 'bad_utterance'),
    (dict(modality=VOICE, utterance_start=99.0, utterance_end=102.0), 'future_stamp'),
    (dict(modality=VOICE, stamp=90.0, utterance_start=90.0, utterance_end=93.0), 'stale'),
])
def test_bad_inputs_are_rejected_with_a_reason(kwargs, reason):
    arguments = dict(modality=FACE, stamp=99.9, label_names=EMOTION_LABELS,
                     probabilities=GOOD, confidence=0.5, now=100.0, config=FusionConfig())
    arguments.update(kwargs)
    with pytest.raises(InvalidInput) as raised:
        make_observation(**arguments)
    assert raised.value.reason == reason


def test_unknown_modality_and_labels_are_echoed_cut_short():
    """A sender's 1 MB label or modality must not become a 1 MB log line."""
    huge = 'x' * 1_000_000
    arguments = dict(modality=FACE, stamp=99.9, label_names=EMOTION_LABELS,
                     probabilities=GOOD, confidence=0.5, now=100.0, config=FusionConfig())
    for kwargs in (dict(modality=huge), dict(label_names=(huge,) * 7),
                   dict(label_names=EMOTION_LABELS[:6] + (huge,))):
        with pytest.raises(InvalidInput) as raised:
            make_observation(**{**arguments, **kwargs})
        assert len(str(raised.value)) < 400


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
    (dict(face_track_timeout_s=0.0), 'face_track_timeout_s'),
    (dict(face_fresh_window_s=-0.1), 'face_fresh_window_s'),
])
def test_inconsistent_configurations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FusionConfig(**kwargs)


def test_a_class_the_model_over_calls_does_not_win_a_tie():
    face = np.array([0.30, 0.05, 0.10, 0.28, 0.09, 0.09, 0.09])  # angry just ahead of happy
    flat = FusionConfig(smoothing_time_constant_s=0.0, face_class_prior=(1.0,) * 7)
    biased = FusionConfig(smoothing_time_constant_s=0.0)  # the face model over-calls angry
    states = []
    for config in (flat, biased):
        fuser = EmotionFuser(config)
        feed(fuser, config, FACE, 100.0, face)
        states.append(fuser.update(100.0).emotion)
    assert states == ['angry', 'happy']
    with pytest.raises(ValueError, match='face_class_prior'):
        FusionConfig(face_class_prior=(1.0,) * 6)


def test_log_pooling_lets_one_modality_rule_a_class_out():
    face = np.array([0.012, 0.012, 0.012, 0.30, 0.012, 0.012, 0.64])  # neutral, or happy
    voice = np.array([0.004, 0.004, 0.004, 0.50, 0.004, 0.48, 0.004])  # surely not neutral
    emotions = {}
    for pooling in ('linear', 'log'):
        config = FusionConfig(smoothing_time_constant_s=0.0, pooling=pooling, voice_weight=0.3,
                              face_class_prior=(1.0,) * 7, voice_class_prior=(1.0,) * 7)
        fuser = EmotionFuser(config)
        feed(fuser, config, FACE, 100.0, face)
        feed(fuser, config, VOICE, 100.0, voice)
        emotions[pooling] = fuser.update(100.0).emotion
    assert emotions == {'linear': 'neutral', 'log': 'happy'}
