"""Offline replay of real bags through the nodes' cores; broken bags give clear errors."""
import json
import shutil

import numpy as np
import pytest

from mika_common.emotions import EMOTION_LABELS
from mika_evaluation.bag_format import (
    AUDIO_TOPIC, AUDIO_TYPE, CAMERA_TOPIC, IMAGE_TYPE, TRUTH_TOPIC, TRUTH_TYPE, BagError,
    make_typestore)
from mika_evaluation.node_config import ConfigError, NodeParameters
from mika_evaluation.offline import evaluate, fuse, main, replay

PARAMS = NodeParameters.load(None)


@pytest.fixture(scope='module')
def replays(small_bags, face_model_path, voice_model_path):
    """Each format replayed: mcap with the truth topic, sqlite3 with the CSV."""
    logs = {}
    for storage, labels in (('mcap', None), ('sqlite3', 'csv')):
        bag, csv_path = small_bags[storage]
        logs[storage] = replay(bag, PARAMS, csv_path if labels else None,
                               [face_model_path], voice_model_path)
    return logs


def test_both_formats_and_label_sources_give_the_same_results(replays):
    mcap, sqlite = replays['mcap'], replays['sqlite3']
    assert mcap.truth_source.startswith('topic') and sqlite.truth_source.startswith('file')
    assert [(round(i.start, 3), i.label) for i in mcap.truth] == \
        [(round(i.start, 3), i.label) for i in sqlite.truth]
    assert {k: v for k, v in mcap.messages.items() if k != TRUTH_TOPIC} == sqlite.messages
    assert len(mcap.results) == len(sqlite.results) > 0
    for a, b in zip(mcap.results, sqlite.results):
        assert (a.modality, a.stamp, a.track_id) == (b.modality, b.stamp, b.track_id)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
    assert fuse(mcap, PARAMS.fusion).labels == fuse(sqlite, PARAMS.fusion).labels


def test_pipelines_saw_faces_and_utterances(replays):
    log = replays['mcap']
    assert log.counters['frames'] == log.messages[CAMERA_TOPIC]
    assert log.counters['frames with a face'] > 0.3 * log.counters['frames']
    voices = [r for r in log.results if r.modality == 'voice']
    assert len(voices) >= 2  # one utterance per segment, three segments
    for result in log.results:
        assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-3)
        assert log.start <= result.stamp <= result.arrival + 1e-9


def test_report_is_whole_and_consistent(tmp_path, small_bags, face_model_path,
                                        voice_model_path):
    bag, _ = small_bags['mcap']
    out = tmp_path / 'report'
    report = evaluate(bag, None, out, face_models=[face_model_path],
                      voice_model=voice_model_path)
    assert report['complete'] and report['truth_segments'] == 3
    for name in ('report.json', 'report.md', 'confusion.png', 'timeline.png'):
        assert (out / name).stat().st_size > 0
    written = json.loads((out / 'report.json').read_text())
    for source in ('face', 'voice', 'fused'):
        scores = written['timeline'][source]
        matrix = np.asarray(scores['confusion_matrix'])
        if matrix.sum():
            assert scores['accuracy'] == pytest.approx(np.trace(matrix) / matrix.sum())
        assert 0.0 <= scores['coverage'] <= 1.0
    assert written['latency']['face.detection']['count'] == written['counters']['frames']
    assert written['replay']['real_time_factor'] > 0


def write_bag(path, topics, storage='mcap', truncate_to=None):
    """A small bag with the given {topic: msgtype} (custom types registered from text)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_types_from_msg
    typestore = make_typestore()
    typestore.register(get_types_from_msg('string note\n', 'acme_msgs/msg/Mystery'))
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        for topic, msgtype in topics.items():
            connection = writer.add_connection(topic, msgtype, typestore=typestore)
            message = typestore.types[msgtype]
            if msgtype == TRUTH_TYPE:
                instance = message(data='happy')
            elif msgtype == 'acme_msgs/msg/Mystery':
                instance = message(note='?')
            else:
                continue
            writer.write(connection, 1_700_000_000 * 10**9,
                         typestore.serialize_cdr(instance, msgtype))


def test_missing_topic_is_named(tmp_path):
    bag = tmp_path / 'no_audio'
    write_bag(bag, {CAMERA_TOPIC: IMAGE_TYPE, TRUTH_TOPIC: TRUTH_TYPE})
    with pytest.raises(BagError, match=f'no topic {AUDIO_TOPIC}.*{CAMERA_TOPIC}'):
        replay(bag, PARAMS)


def test_unknown_message_type_is_named(tmp_path):
    bag = tmp_path / 'mystery'
    write_bag(bag, {CAMERA_TOPIC: 'acme_msgs/msg/Mystery', AUDIO_TOPIC: AUDIO_TYPE,
                    TRUTH_TOPIC: TRUTH_TYPE})
    with pytest.raises(BagError, match='acme_msgs/msg/Mystery \\(an unknown message type\\)'):
        replay(bag, PARAMS)


def test_no_ground_truth_anywhere(tmp_path):
    bag = tmp_path / 'unlabelled'
    write_bag(bag, {CAMERA_TOPIC: IMAGE_TYPE, AUDIO_TOPIC: AUDIO_TYPE})
    with pytest.raises(BagError, match='--labels'):
        replay(bag, PARAMS)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_truncated_bag_writes_no_report(tmp_path, small_bags, storage, face_model_path,
                                        voice_model_path, capsys):
    source, labels = small_bags[storage]
    bag = tmp_path / f'cut_{storage}'
    shutil.copytree(source, bag)
    data = next(p for p in bag.iterdir() if p.suffix in ('.mcap', '.db3'))
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
    out = tmp_path / 'out'
    code = main([str(bag), '--output-dir', str(out), '--face-model', face_model_path,
                 '--voice-model', str(voice_model_path)])
    assert code == 2
    error = capsys.readouterr().err
    assert 'evaluate_bag:' in error and ('truncated' in error or 'damaged' in error)
    assert not (out / 'report.json').exists() and not (out / 'report.md').exists()


def test_invalid_params_are_refused_like_the_nodes_refuse_them(tmp_path):
    params = tmp_path / 'bad.yaml'
    params.write_text('fusion_node:\n  ros__parameters:\n    half_life_s: -1.0\n'
                      'face_node:\n  ros__parameters:\n    detector: yolo\n')
    with pytest.raises(ConfigError, match='detector'):
        NodeParameters.load(params)
    params.write_text('fusion_node:\n  ros__parameters:\n    half_life_s: 0.01\n')
    with pytest.raises(ConfigError, match='half_life_s'):
        NodeParameters.load(params)


def test_tuning_sweep_writes_a_params_file_the_nodes_accept(tmp_path, replays):
    from mika_evaluation.tune import choose_stable, pareto, sweep, write_params
    log = replays['mcap']
    grid = {'voice_weight': [0.2, 1.0], 'min_dwell_s': [0.0, 1.0], 'switch_margin': [0.0, 0.3]}
    rows = sweep([log], PARAMS.fusion, grid, flip_cost=0.01, reaction_cost=0.02)
    assert len(rows) == 8
    assert rows == sorted(rows, key=lambda r: -r['score'])
    # debouncing harder never flips more: no dwell and no margin flip the most
    by_params = {tuple(r['parameters'].values()): r for r in rows}
    assert by_params[(0.2, 1.0, 0.3)]['flips_per_minute'] <= \
        by_params[(0.2, 0.0, 0.0)]['flips_per_minute']
    assert rows[0] in pareto(rows)
    chosen = choose_stable(rows, PARAMS.fusion)  # never one that makes a steady face flicker
    assert chosen is not None and chosen['instability'] is None
    assert all(r['instability'] for r in rows[:rows.index(chosen)])
    base = tmp_path / 'base.yaml'
    base.write_text('/**/face_node:\n  ros__parameters:\n    min_face_px: 30\n'
                    '/**/fusion_node:\n  ros__parameters:\n    max_age_s: 5.0\n')
    output = tmp_path / 'tuned.yaml'
    write_params(base, {**PARAMS.fusion, **rows[0]['parameters']}, output, 'test')
    tuned = NodeParameters.load(output)
    assert tuned.face['min_face_px'] == 30  # the rest of the base file is kept
    assert [k for k in __import__('yaml').safe_load(output.read_text())] == [
        '/**/face_node', '/**/fusion_node']  # the node's own section was updated
    for name, value in rows[0]['parameters'].items():
        assert tuned.fusion[name] == value


def test_params_file_sections_are_found_as_ros_finds_them(tmp_path):
    params = tmp_path / 'p.yaml'
    params.write_text('/**:\n  ros__parameters:\n    threads: 2\n'
                      '/**/face_node:\n  ros__parameters:\n    min_face_px: 24\n'
                      '/robot/fusion_node:\n  ros__parameters:\n    voice_weight: 0.3\n')
    loaded = NodeParameters.load(params)
    assert loaded.face['min_face_px'] == 24 and loaded.face['threads'] == 2
    assert loaded.fusion['voice_weight'] == 0.3
    assert loaded.fusion['half_life_s'] == 0.5  # the node's default


def test_the_launch_files_params_are_used():
    import yaml
    repo_yaml = __import__('pathlib').Path(__file__).resolve().parents[3] / 'config' / \
        'perception.yaml'
    document = yaml.safe_load(repo_yaml.read_text())
    loaded = NodeParameters.load(repo_yaml)
    fusion_key = next(k for k in document if k.endswith('fusion_node'))
    for name, value in document[fusion_key]['ros__parameters'].items():
        assert loaded.fusion[name] == value


def test_a_camera_recorded_as_jpeg_gives_the_raw_bags_results(
        tmp_path, small_sources, small_layout, replays, face_model_path, voice_model_path):
    """The same layout with CompressedImage frames on <camera>/compressed, found without
    --camera-topic; JPEG at quality 90 changes some pixels, so the face results are close
    to the raw bag's, not equal; the voice results are equal."""
    from mika_evaluation.bag_builder import LayoutConfig, build
    faces, voices = small_sources
    bag = tmp_path / 'jpeg_mcap'
    manifest = build(bag, faces, voices, LayoutConfig(**small_layout, image_format='jpeg'))
    assert manifest['camera_topic'] == CAMERA_TOPIC + '/compressed'
    log = replay(bag, PARAMS, None, [face_model_path], voice_model_path)
    raw = replays['mcap']
    assert log.messages[CAMERA_TOPIC + '/compressed'] == raw.messages[CAMERA_TOPIC]
    assert log.counters['frames'] == raw.counters['frames']
    assert abs(log.counters['frames with a face'] - raw.counters['frames with a face']) <= \
        0.05 * raw.counters['frames']

    def top_by_stamp(log, modality):
        return {r.stamp: EMOTION_LABELS[int(np.argmax(r.probabilities))] for r in log.results
                if r.modality == modality}
    assert top_by_stamp(log, 'voice') == top_by_stamp(raw, 'voice')
    jpeg_faces, raw_faces = top_by_stamp(log, 'face'), top_by_stamp(raw, 'face')
    agreeing = sum(jpeg_faces.get(stamp) == label for stamp, label in raw_faces.items())
    assert agreeing >= 0.9 * len(raw_faces), (agreeing, len(raw_faces))


def test_an_unknown_image_format_is_refused(tmp_path, small_sources):
    from mika_evaluation.bag_builder import LayoutConfig, build
    faces, voices = small_sources
    with pytest.raises(ValueError, match="image_format 'png' is not one of raw, jpeg"):
        build(tmp_path / 'bag', faces, voices, LayoutConfig(image_format='png'))
