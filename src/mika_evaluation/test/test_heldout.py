"""The several-bag comparison: segment rows from a real replay, pooling, and the command."""
import json

import pytest

from mika_evaluation import heldout


def row(bag, label, ticks, face, voice, fused, fused_flips=0):
    return {'bag': bag, 'label': label, 'ticks': ticks, 'seconds': ticks / 10.0,
            'face_correct': face, 'voice_correct': voice, 'fused_correct': fused,
            'face_flips': 3, 'voice_flips': 1, 'fused_flips': fused_flips,
            'voice_wait_ticks': ticks // 2, 'voice_after_ticks': ticks - ticks // 2,
            'voice_after_correct': voice, 'voice_held_after_correct': voice,
            'utterances': 2, 'utterances_correct': 1}


def test_pooling_weighs_segments_by_their_labelled_time():
    rows = [row('a', 'happy', 100, 50, 30, 80), row('b', 'sad', 300, 150, 90, 150, 1)]
    scores = heldout.pooled(rows)
    assert scores['fused']['accuracy'] == pytest.approx(230 / 400)
    assert scores['face']['accuracy'] == pytest.approx(0.5)
    assert scores['fused']['flips_per_minute'] == pytest.approx(1 / (40 / 60))
    result = heldout.compare(rows, rounds=200)
    assert set(result['per_bag']) == {'a', 'b'}
    assert result['fused_lead']['face']['pooled'] == pytest.approx(230 / 400 - 0.5)
    low, high = result['fused_lead']['face']['interval_95']
    assert low <= 0.0 <= high  # two segments that disagree prove nothing either way


def test_voice_breakdown_separates_the_wait_for_speech_from_the_model():
    import numpy as np

    from mika_common.emotions import EMOTION_LABELS
    from mika_evaluation.bag_format import Interval
    from mika_evaluation.offline import ModalityResult, Timeline

    def voice(label, start, end):
        probabilities = np.full(len(EMOTION_LABELS), 0.01)
        probabilities[EMOTION_LABELS.index(label)] = 1 - 0.01 * (len(EMOTION_LABELS) - 1)
        return ModalityResult('voice', end + 0.4, start, probabilities, 0.9, end_stamp=end)

    truth = [Interval(0.0, 10.0, 'happy'), Interval(10.0, 20.0, 'sad')]
    # one right and one wrong utterance in the first segment, one right in the second
    results = [voice('happy', 0.5, 4.6), voice('angry', 5.0, 8.6), voice('sad', 10.5, 14.6)]
    times = np.arange(0.0, 20.0, 1.0)
    # the voice state lets the first result lapse a tick before the second arrives
    state = [None] * 5 + ['happy'] * 3 + [None] + ['angry'] * 6 + ['sad'] * 5
    timeline = Timeline(times, {'face': state, 'voice': state, 'fused': state}, [], {})
    log = type('Log', (), {'results': results, 'truth': truth})()
    rows = heldout.segment_rows('b', log, timeline)
    assert [r['voice_wait_ticks'] for r in rows] == [5, 5]  # first results at 5.0 and 15.0 s
    assert [r['utterances_correct'] for r in rows] == [1, 1]
    breakdown = heldout.voice_breakdown(rows)
    assert breakdown['waiting_share'] == pytest.approx(0.5)
    assert breakdown['per_utterance'] == pytest.approx(2 / 3)
    assert breakdown['after_first_result'] == pytest.approx((3 + 5) / 10)
    assert breakdown['held_after_first_result'] == pytest.approx((4 + 5) / 10)


def test_segment_rows_agree_with_the_report_on_a_real_replay(
        small_bags, face_model_path, voice_model_path):
    from mika_evaluation.benchmark import default_params_file
    from mika_evaluation.node_config import NodeParameters
    from mika_evaluation.offline import fuse, replay
    from mika_evaluation.report import build_report
    bag, _ = small_bags['mcap']
    params = NodeParameters.load(default_params_file())
    log = replay(bag, params, face_models=[face_model_path], voice_model=voice_model_path)
    timeline = fuse(log, params.fusion)
    rows = heldout.segment_rows('small', log, timeline)
    assert [r['label'] for r in rows] == [i.label for i in log.truth]
    summary = build_report(log, timeline, params)['summary']
    scores = heldout.pooled(rows)
    for source in heldout.SOURCES:
        assert scores[source]['accuracy'] == pytest.approx(
            summary[source]['accuracy_counting_no_state_as_wrong'], abs=0.02)


def test_the_command_refuses_to_run_without_bags(capsys):
    with pytest.raises(SystemExit) as stopped:
        heldout.parse_args([])
    assert stopped.value.code == 2 and '--seeds' in capsys.readouterr().err


def test_the_command_writes_per_bag_pooled_and_interval(
        small_bags, face_model_path, voice_model_path, tmp_path):
    bags = [str(small_bags[storage][0]) for storage in ('mcap', 'sqlite3')]
    output = tmp_path / 'heldout'
    assert heldout.main(['--bags', *bags, '--face-model', face_model_path, '--voice-model',
                         voice_model_path, '--rounds', '100', '--output', str(output)]) == 0
    result = json.loads(output.with_suffix('.json').read_text())
    assert set(result['comparison']['per_bag']) == {'small_mcap', 'small_sqlite3'}
    # the same recording in two storage formats: identical scores
    per_bag = result['comparison']['per_bag']
    assert per_bag['small_mcap'] == per_bag['small_sqlite3']
    text = output.with_suffix('.md').read_text()
    assert '**pooled**' in text and 'fused minus' in text


def test_kept_replays_fuse_again_to_the_same_scores(
        small_bags, face_model_path, voice_model_path, tmp_path):
    kept = tmp_path / 'replays'
    first, again = tmp_path / 'first', tmp_path / 'again'
    assert heldout.main(['--bags', str(small_bags['mcap'][0]), '--face-model', face_model_path,
                         '--voice-model', voice_model_path, '--rounds', '50',
                         '--save-replays', str(kept), '--output', str(first)]) == 0
    assert heldout.main(['--replays', str(kept / 'small_mcap.pkl'), '--rounds', '50',
                         '--output', str(again)]) == 0
    scores = [json.loads(path.with_suffix('.json').read_text())['comparison']['pooled']
              for path in (first, again)]
    assert scores[0] == scores[1]
