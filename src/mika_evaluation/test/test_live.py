"""Live evaluation's core (ROS-free): it scores through the offline report code, so what
offline evaluation computed, heard as the evaluator would hear it, gives the same report."""
import json
import math

import numpy as np
import pytest

from mika_common.emotions import EMOTION_LABELS
from mika_evaluation.bag_format import BagError
from mika_evaluation.live import LiveRecording, LiveSettings, bag_metadata, fused_labels
from mika_evaluation.node_config import NodeParameters
from mika_evaluation.offline import fuse, load_replay, replay
from mika_evaluation.report import build_report

PARAMS = NodeParameters.load(None)


def settings(tmp_path, **changes):
    values = dict(output_dir=tmp_path / 'live', graph=PARAMS, labels_file=None, bag=None,
                  bag_start_s=None, fused_timeout_s=1.0, plots=False)
    values.update(changes)
    return LiveSettings(**values)


def one_hot(label, confidence=0.8):
    probabilities = [(1 - confidence) / 6] * 7
    probabilities[EMOTION_LABELS.index(label)] = confidence
    return probabilities


@pytest.fixture(scope='module')
def offline_run(small_bags, face_model_path, voice_model_path):
    bag, labels_csv = small_bags['mcap']
    log = replay(bag, PARAMS, None, [face_model_path], voice_model_path)
    timeline = fuse(log, PARAMS.fusion)
    return bag, labels_csv, log, timeline


def hear_offline_run(recording, log, timeline):
    """Feed what the offline replay computed as the evaluator hears it live: each truth
    message at its bag time, each result when it exists, the fused state at every tick."""
    events = []
    for interval, following in zip(log.truth, list(log.truth[1:]) + [None]):
        events.append((interval.start, interval.label))
        if following is None or following.start > interval.end:
            events.append((interval.end, ''))
    for time_s, label in events:
        recording.add_truth('emotion/ground_truth', time_s, label, wall=time_s)
    for result in log.results:
        voice = result.modality == 'voice'
        problem = recording.add_result(
            f'emotion/{result.modality}', result.modality, result.arrival, result.arrival,
            result.stamp, list(EMOTION_LABELS), result.probabilities, result.confidence,
            result.track_id, result.area, utterance_start=result.stamp if voice else 0.0,
            utterance_end=result.end_stamp if voice else 0.0, model_id='m')
        assert problem is None
    for tick, label in zip(timeline.times, timeline.labels['fused']):
        recording.add_fused('emotion/fused', float(tick), label or 'unknown', float(tick))


def test_what_offline_computed_heard_live_gives_the_offline_report(tmp_path, offline_run):
    bag, _, log, timeline = offline_run
    offline = build_report(log, timeline, PARAMS)
    recording = LiveRecording(settings(tmp_path, bag=bag))
    hear_offline_run(recording, log, timeline)
    live = recording.write_report()
    assert live['mode'] == 'live' and offline['mode'] == 'offline'
    assert (live['duration_s'], live['truth_segments']) == \
        (offline['duration_s'], offline['truth_segments'])
    assert live['labelled_s'] == pytest.approx(offline['labelled_s'])
    for source in ('face', 'voice', 'fused'):
        for key, value in offline['summary'][source].items():
            assert live['summary'][source][key] == pytest.approx(value, nan_ok=True), \
                (source, key)
        assert live['timeline'][source]['confusion_matrix'] == \
            offline['timeline'][source]['confusion_matrix']
    for modality in ('face', 'voice'):
        assert live['per_result'][modality]['confusion_matrix'] == \
            offline['per_result'][modality]['confusion_matrix']
    out = tmp_path / 'live'
    assert json.loads((out / 'report.json').read_text())['complete']
    assert '(live)' in (out / 'report.md').read_text()
    assert live['latency']['face.end_to_end']['count'] == live['counters']['face results']


def test_the_fusion_core_check_and_the_kept_replay(tmp_path, offline_run):
    bag, _, log, timeline = offline_run
    recording = LiveRecording(settings(tmp_path, bag=bag, save_replay=True))
    hear_offline_run(recording, log, timeline)
    live = recording.write_report()
    # the states the core computed, heard as published: the same on every tick
    assert live['fusion_core']['agreement'] == 1.0
    assert live['fusion_core']['summary']['accuracy'] == \
        pytest.approx(live['summary']['fused']['accuracy'])
    kept = load_replay(tmp_path / 'live' / 'replay.pkl')
    assert [(r.stamp, r.label) for r in kept.results] == [(r.stamp, r.label) for r in log.results]

    # a fusion node that published each state half a second late disagrees on some ticks
    late = LiveRecording(settings(tmp_path, bag=bag))
    hear_offline_run(late, log, timeline)
    late.fused = [(stamp + 0.5, emotion) for stamp, emotion in late.fused]
    report = late.write_report(tmp_path / 'late')
    assert report['fusion_core']['agreement'] < 0.95
    assert not (tmp_path / 'late' / 'replay.pkl').exists()


def test_the_graphs_own_totals_go_into_the_counters(tmp_path, offline_run):
    bag, _, log, timeline = offline_run
    recording = LiveRecording(settings(tmp_path, bag=bag))
    hear_offline_run(recording, log, timeline)
    recording.add_diagnostics('face_node: face emotion', {
        'frames total': '483', 'frames per s': '14.90', 'rejected: bad_encoding': '2'})
    counters = recording.build()[0].counters
    assert counters['face_node: face emotion: frames'] == 483
    assert counters['face_node: face emotion: rejected: bad_encoding'] == 2
    assert not any('per s' in key for key in counters)


def test_the_bag_start_comes_from_the_bag_the_clock_or_the_first_stamp(tmp_path, offline_run):
    bag, labels_csv, log, timeline = offline_run
    start, end, storage = bag_metadata(bag)
    assert (start, end, storage) == (pytest.approx(log.start), pytest.approx(log.end), 'mcap')
    by_clock = LiveRecording(settings(tmp_path, labels_file=labels_csv))
    by_clock.clock(log.start)  # the player publishes the bag start first
    hear_offline_run(by_clock, log, timeline)
    by_clock.clock(log.end)
    assert by_clock.span()[0] == log.start and 'first /clock' in by_clock.span()[2]
    report = by_clock.write_report()
    assert report['truth_segments'] == len(log.truth)
    assert report['summary']['fused']['accuracy'] == pytest.approx(
        build_report(log, timeline, PARAMS)['summary']['fused']['accuracy'])

    no_clock = LiveRecording(settings(tmp_path))
    hear_offline_run(no_clock, log, timeline)
    assert no_clock.span()[0] == log.start  # the truth topic's first message
    given = LiveRecording(settings(tmp_path, bag_start_s=log.start - 2.0))
    hear_offline_run(given, log, timeline)
    assert given.span()[0] == log.start - 2.0


def test_truth_is_timed_at_receipt_and_the_first_label_from_the_start(tmp_path):
    recording = LiveRecording(settings(tmp_path, bag_start_s=100.0))
    for time_s, label in ((100.06, 'happy'), (101.53, 'sad'), (103.0, '')):
        recording.add_truth('emotion/ground_truth', time_s, label, 0.0)
    recording.add_fused('emotion/fused', 102.0, 'sad', 0.0)
    log, _ = recording.build()
    assert [(i.start, i.end, i.label) for i in log.truth] == [
        (100.0, 101.53, 'happy'), (101.53, 103.0, 'sad')]


def test_fused_states_are_sampled_as_published():
    states = [(10.0, 'happy'), (10.5, 'happy'), (10.5, 'sad'), (11.0, 'unknown'),
              (14.0, 'angry')]
    ticks = np.array([9.9, 10.0, 10.5, 10.9, 11.0, 12.5, 14.0])
    assert fused_labels(states, ticks, timeout_s=1.0) == [
        None, 'happy', 'sad', 'sad', None, None, 'angry']  # 12.5: 1.5 s since a state
    assert fused_labels([], ticks, 1.0) == [None] * len(ticks)


def test_malformed_results_are_refused_and_clock_mismatches_reported(tmp_path):
    recording = LiveRecording(settings(tmp_path))
    names = list(EMOTION_LABELS)
    assert 'length_mismatch' not in recording.counters
    problem = recording.add_result('emotion/face', 'face', 100.0, 0.0, 99.9, names[:6],
                                   one_hot('happy')[:6] + [0.0], 0.8)
    assert 'label names' in problem and recording.counters['face rejected: length_mismatch'] == 1
    problem = recording.add_result('emotion/face', 'face', 100.0, 0.0, 99.9, names,
                                   [0.5] * 7, 0.5)
    assert 'sum' in problem and not recording.results
    # reordered names are put in canonical order, as the fusion node does
    reversed_names = names[::-1]
    assert recording.add_result('emotion/face', 'face', 100.0, 0.0, 99.9, reversed_names,
                                one_hot('happy')[::-1], 0.8) is None
    assert recording.results[-1].label == 'happy'
    # a sensor stamp years away from the clock: scored, and the cause named
    problem = recording.add_result('emotion/voice', 'voice', 1.8e9, 0.0, 1.7e9, names,
                                   one_hot('sad'), 0.8, utterance_start=1.7e9,
                                   utterance_end=1.7e9 + 2)
    assert 'use_sim_time:=true' in problem and '--clock' in problem
    assert len(recording.results) == 2
    assert 'not one of' in recording.add_truth('emotion/ground_truth', 1.0, 'bored', 0.0)


def test_a_recording_without_truth_or_input_says_so(tmp_path):
    recording = LiveRecording(settings(tmp_path))
    with pytest.raises(BagError, match='nothing was heard'):
        recording.write_report()
    recording.clock(100.0)
    recording.add_fused('emotion/fused', 100.5, 'happy', 0.0)
    recording.clock(105.0)
    with pytest.raises(BagError, match='no ground truth heard'):
        recording.write_report()
    assert not (tmp_path / 'live' / 'report.json').exists()


def test_a_clock_going_back_restarts_the_recording(tmp_path):
    recording = LiveRecording(settings(tmp_path))
    recording.clock(200.0)
    recording.add_fused('emotion/fused', 200.1, 'happy', 0.0)
    assert not recording.clock(200.5)
    assert recording.clock(100.0) and not recording.heard  # the bag was played again
    assert recording.first_clock == 100.0


def test_settings_refuse_a_bad_label_file_or_bag_at_start(tmp_path):
    values = {'output_dir': str(tmp_path), 'params_file': '', 'labels_file': '', 'bag': '',
              'bag_start_s': 0.0, 'end_after_idle_s': 5.0, 'fused_timeout_s': 1.0,
              'plots': True, 'save_replay': False}
    assert LiveSettings.from_values(values).bag_start_s is None
    bad = tmp_path / 'labels.csv'
    bad.write_text('begin,end,label\n0,1,happy\n')
    with pytest.raises(ValueError, match='header start,end,label'):
        LiveSettings.from_values({**values, 'labels_file': str(bad)})
    with pytest.raises(ValueError, match='metadata.yaml'):
        LiveSettings.from_values({**values, 'bag': str(tmp_path)})
    params = tmp_path / 'p.yaml'
    params.write_text('fusion_node:\n  ros__parameters:\n    publish_rate_hz: 0.0\n')
    with pytest.raises(ValueError, match='publish_rate_hz'):
        LiveSettings.from_values({**values, 'params_file': str(params)})
    assert math.isclose(LiveSettings.from_values(values).fused_timeout_s, 1.0)
