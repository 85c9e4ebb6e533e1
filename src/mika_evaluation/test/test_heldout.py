"""The several-bag comparison: segment rows from a real replay, pooling, and the command."""
import json

import pytest

from mika_evaluation import heldout


def row(bag, label, ticks, face, voice, fused, fused_flips=0):
    return {'bag': bag, 'label': label, 'ticks': ticks, 'seconds': ticks / 10.0,
            'face_correct': face, 'voice_correct': voice, 'fused_correct': fused,
            'face_flips': 3, 'voice_flips': 1, 'fused_flips': fused_flips}


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
