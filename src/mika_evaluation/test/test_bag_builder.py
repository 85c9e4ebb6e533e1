"""Evaluation bags built from the shared data read back as the nodes expect them."""
import json

import cv2
import numpy as np
import pytest

from mika_evaluation.bag_builder import FaceSource, LayoutConfig, MANIFEST_KEY, build
from mika_evaluation.bag_format import (
    AUDIO_INFO_TOPIC, AUDIO_TOPIC, CAMERA_TOPIC, TRUTH_TOPIC, intervals_from_label_messages,
    make_typestore, read_custom_data, read_truth_csv)


def read_all(bag):
    from rosbags.rosbag2 import Reader
    typestore = make_typestore()
    with Reader(bag) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        messages = [(c.topic, t * 1e-9, typestore.deserialize_cdr(raw, c.msgtype))
                    for c, t, raw in reader.messages()]
        return types, messages, reader.start_time * 1e-9, reader.end_time * 1e-9


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_bag_layout(small_bags, storage):
    bag, labels_csv = small_bags[storage]
    types, messages, start, end = read_all(bag)
    assert types == {CAMERA_TOPIC: 'sensor_msgs/msg/Image',
                     AUDIO_TOPIC: 'audio_common_msgs/msg/AudioDataStamped',
                     AUDIO_INFO_TOPIC: 'audio_common_msgs/msg/AudioInfo',
                     TRUTH_TOPIC: 'std_msgs/msg/String'}
    frames = [(t, m) for topic, t, m in messages if topic == CAMERA_TOPIC]
    chunks = [(t, m) for topic, t, m in messages if topic == AUDIO_TOPIC]
    info = [m for topic, _, m in messages if topic == AUDIO_INFO_TOPIC]
    # camera at 15 FPS, 640x480 bgr8, stamped at the log time
    assert np.diff([t for t, _ in frames]) == pytest.approx(1 / 15, abs=1e-6)
    first = frames[0][1]
    assert (first.width, first.height, first.encoding, first.step) == (640, 480, 'bgr8', 1920)
    assert first.header.stamp.sec + first.header.stamp.nanosec * 1e-9 == pytest.approx(
        frames[0][0])
    # 100 ms of S16LE 16 kHz mono per chunk, continuous stamps; latched AudioInfo first
    assert {len(m.audio.data) for _, m in chunks} == {3200}
    assert np.diff([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
                    for _, m in chunks]) == pytest.approx(0.1, abs=1e-6)
    assert (info[0].sample_rate, info[0].channels, info[0].sample_format) == (
        16000, 1, 'S16LE')
    assert messages[0][0] in (AUDIO_INFO_TOPIC, TRUTH_TOPIC)
    # speech is in the audio: some chunks well above the -60 dBFS floor
    levels = [np.abs(np.frombuffer(m.audio.data.tobytes(), '<i2')).max() for _, m in chunks]
    assert max(levels) > 3000 and min(levels) < 200
    # the truth topic and the CSV say the same
    truth_events = [(t, m.data) for topic, t, m in messages if topic == TRUTH_TOPIC]
    from_topic = intervals_from_label_messages(truth_events, end)
    from_csv = read_truth_csv(labels_csv, start)
    assert len(from_topic) == 3 and truth_events[-1][1] == ''
    assert [(round(i.start, 3), round(i.end, 3), i.label) for i in from_topic] == \
        [(round(i.start, 3), round(i.end, 3), i.label) for i in from_csv]


def test_provenance_in_metadata_and_csv(small_bags):
    bag, labels_csv = small_bags['mcap']
    manifest = json.loads(read_custom_data(bag)[MANIFEST_KEY])
    assert 'private_test' in manifest['face_source']
    assert manifest['voice_speakers'] == ['03', '08']
    assert all(item.startswith('emodb:') for items in manifest['voice_items'] for item in items)
    header = [line for line in labels_csv.read_text().splitlines() if line.startswith('#')]
    assert any('private_test' in line for line in header)
    assert any('speakers 03, 08' in line for line in header)


def test_image_folders_source(tmp_path, fer_path, small_sources):
    """Faces from one folder per emotion (what users bring) make a bag too."""
    fer_faces, voices = small_sources
    for label in ('happy', 'sad'):
        (tmp_path / 'faces' / label).mkdir(parents=True)
        for number, (_, image) in enumerate(fer_faces.images[label][:3]):
            cv2.imwrite(str(tmp_path / 'faces' / label / f'{number}.png'), image)
    faces = FaceSource.from_folders(tmp_path / 'faces')
    assert sorted(faces.images) == ['happy', 'sad']
    manifest = build(tmp_path / 'folder_bag', faces, voices,
                     LayoutConfig(segments=2, utterances_per_segment=1, fps=15.0), 'mcap')
    assert sorted(manifest['labels']) == ['happy', 'sad']
    assert all('/' in item for items in manifest['face_items'] for item in items)


def test_refuses_to_overwrite(small_bags, small_sources):
    bag, _ = small_bags['mcap']
    with pytest.raises(FileExistsError):
        build(bag, *small_sources, LayoutConfig(segments=1))
