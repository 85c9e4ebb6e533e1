"""Personal fine-tuning, face side: video file -> import_session -> prepare_sessions ->
split by session -> fine_tune -> a model the face node's classifier loads.

The videos are made of real faces (FER-2013 private-test images, moving like a seated
person; see :mod:`mika_personal.face_video`); the models are real and trained here for a
few epochs from the shipped model. Tests that need the shared data skip without it.
"""
import json
import os
import pathlib

import numpy as np
import pytest

from mika_common.emotions import EMOTION_LABELS
from mika_evaluation.bag_format import read_truth_csv
from mika_personal import face_tuning, face_video, fine_tune, import_media, prepare
from mika_personal.face_data import (
    NEAR_DUPLICATE_MAD, FaceDataset, thin_near_duplicates, thumbnails)
from mika_personal.sessions import LeakageError

REPO = pathlib.Path(__file__).resolve().parents[3]
BASE_MODEL = str(REPO / 'src' / 'mika_perception' / 'models' / 'face_emotion.keras')
LABELS = ('angry', 'happy', 'sad', 'surprise')
SESSIONS = ('alice-1', 'alice-2', 'alice-3')
MOTION = face_video.Motion(fps=10.0, hold_s=1.0, width=320, height=240, face_px=100,
                           drift_px=15.0)


@pytest.fixture(scope='module')
def fer_path() -> pathlib.Path:
    data = pathlib.Path(os.environ.get('MIKA_DATA', REPO.parent / 'shared' / 'data'))
    path = data / 'fer2013' / 'fer2013.npz'
    if not path.is_file():
        pytest.skip(f'FER-2013 not found at {path} (set MIKA_DATA to the shared data folder)')
    return path


@pytest.fixture(scope='module')
def recordings(tmp_path_factory, fer_path):
    """Three short videos (.avi) with label files: 4 emotions x 2 images held 1 s each."""
    from mika_perception.detection import create_detector
    faces = face_video.fer2013_faces(fer_path)
    faces = {label: faces[label] for label in LABELS}
    pool = face_video.repertoire(
        face_video.keep_detectable(faces, create_detector('auto')[0], MOTION, 3), 3)
    plan = [(session_id, 'person', seed) for seed, session_id in enumerate(SESSIONS)]
    return face_video.render_recordings(tmp_path_factory.mktemp('videos'),
                                        {'person': pool}, plan, MOTION, 2)


@pytest.fixture(scope='module')
def sessions_root(tmp_path_factory, recordings):
    root = tmp_path_factory.mktemp('sessions')
    assert import_media.main(
        ['--person', 'alice', '--output', str(root), '--image-storage', 'jpeg',
         '--video', *[str(r.video) for r in recordings],
         '--labels', *[str(r.labels) for r in recordings],
         '--session-id', *[r.session_id for r in recordings]]) == 0
    return root


@pytest.fixture(scope='module')
def dataset_path(tmp_path_factory, sessions_root) -> pathlib.Path:
    out = tmp_path_factory.mktemp('prepared')
    assert prepare.main([str(sessions_root), '--output-dir', str(out),
                         '--modality', 'face', '--face-model', BASE_MODEL]) == 0
    return out / prepare.FACE_DATASET


@pytest.fixture(scope='module')
def dataset(dataset_path) -> FaceDataset:
    return FaceDataset.load(dataset_path)


# ----------------------------------------------------------------------------- prepare
def test_prepared_faces_keep_session_time_and_label(dataset, dataset_path, recordings):
    from mika_perception.face_model import read_metadata
    with np.load(dataset_path, allow_pickle=False) as raw:  # plain arrays only
        assert raw['crops'].dtype == np.uint8 and raw['labels'].dtype.kind == 'U'
    assert dataset.spec == read_metadata(BASE_MODEL).preprocess
    assert sorted(set(dataset.session_ids)) == list(SESSIONS)
    for recording in recordings:
        intervals = read_truth_csv(recording.labels, 0.0)
        rows = dataset.session_ids == recording.session_id
        assert rows.sum() >= 4  # at least one face per emotion shown
        for time_s, label in zip(dataset.times[rows], dataset.labels[rows]):
            assert [i.label for i in intervals if i.start <= time_s < i.end] == [label]
        assert sorted(set(dataset.labels[rows])) == sorted(LABELS)
    counts = dataset.info['sessions'][SESSIONS[0]]
    assert counts['frames'] == round(len(LABELS) * 2 * MOTION.hold_s * MOTION.fps)
    assert counts['samples kept'] + counts['near-duplicates removed'] == \
        counts['faces extracted']
    assert dataset.info['near_duplicate_mad'] == NEAR_DUPLICATE_MAD
    assert dataset.info['detector'].startswith(('blazeface', 'haar'))


def test_thinning_drops_noisy_copies_and_keeps_changes(dataset):
    for session, counts in dataset.info['sessions'].items():
        # each image is held 10 frames: most of a held image's frames are near-copies
        assert counts['near-duplicates removed'] > counts['samples kept'], (session, counts)
    crops = dataset.crops
    small = thumbnails(dataset.inputs())
    other = crops[int(np.argmax(np.abs(small - small[0]).mean(axis=(1, 2))))]
    rng = np.random.default_rng(0)
    held = [np.clip(crops[0] + rng.normal(0, 2, crops[0].shape), 0, 255).astype(np.uint8)
            for _ in range(5)]
    sequence = FaceDataset(held + [other, other], ['happy'] * 6 + ['sad'], ['s'] * 7,
                           np.arange(7.0), dataset.spec)
    keep = thin_near_duplicates(sequence.inputs(), sequence.session_ids, sequence.labels)
    # a copy with sensor noise is dropped; a different face is kept; so is the same face
    # once the label changes
    assert keep.tolist() == [True, False, False, False, False, True, True]


def test_face_crop_is_what_the_node_classifies():
    from mika_perception.preprocessing import PreprocessSpec, face_crop, preprocess_face
    from mika_perception.sample_frames import face_box_in_frame, face_frame
    frame = face_frame(640, 480, face_side=300, x=150, y=90)
    box = face_box_in_frame(300, 150, 90)
    spec = PreprocessSpec()
    np.testing.assert_array_equal(preprocess_face(face_crop(frame, box, spec), None, spec),
                                  preprocess_face(frame, box, spec))


# ----------------------------------------------------------------------------- split
def test_split_by_session_refuses_leakage(dataset, dataset_path, tmp_path, capsys):
    split = face_tuning.split_by_session(dataset, ['alice-3'])
    assert split.sessions() == {'train': ['alice-1'], 'validation': ['alice-2'],
                                'test': ['alice-3']}
    with pytest.raises(LeakageError, match='alice-2'):
        face_tuning.split_by_session(dataset, ['alice-2'], validation_sessions=['alice-2'])
    with pytest.raises(LeakageError, match='no samples'):
        face_tuning.split_by_session(dataset, ['alice-9'])
    one_recording = dataset.subset(np.flatnonzero(dataset.session_ids == 'alice-1'))
    with pytest.raises(LeakageError, match='both sides.*alice-1'):
        face_tuning.split_by_session(dataset, ['alice-3'], test_dataset=one_recording)
    # the command says so and writes nothing
    assert _fine_tune(dataset_path, tmp_path / 'leaky.keras',
                      '--test-dataset', str(dataset_path)) == 2
    assert 'recordings on both sides of the split' in capsys.readouterr().err
    assert not (tmp_path / 'leaky.keras').exists()


# ----------------------------------------------------------------------------- fine-tune
def _fine_tune(dataset_path, output, *options):
    """The ``fine_tune --modality face`` command; its exit status."""
    return fine_tune.main(['--modality', 'face', '--dataset', str(dataset_path),
                           '--output', str(output), '--base-model', BASE_MODEL,
                           '--batch-size', '16', *options])


def test_fine_tune_freezes_then_unfreezes_and_the_node_loads_it(dataset_path, tmp_path):
    from mika_perception.face_model import FaceEmotionClassifier, load_model, read_metadata
    output = tmp_path / 'personal.keras'
    assert _fine_tune(dataset_path, output, '--test-sessions', 'alice-3', '--head-epochs', '2',
                      '--unfreeze-stages', '1', '--unfreeze-epochs', '1',
                      '--report-dir', str(tmp_path / 'report')) == 0
    base, base_metadata = load_model(BASE_MODEL)
    personal, metadata = load_model(str(output))
    _, blocks = face_tuning.feature_layers(base)
    for block in blocks:
        for layer in block:
            same = all(np.array_equal(a, b) for a, b in zip(
                layer.get_weights(), personal.get_layer(layer.name).get_weights()))
            assert same == (block is not blocks[-1]), layer.name  # only the top block moved
    for layer in base.layers:
        if type(layer).__name__ == 'BatchNormalization':  # statistics of 28k faces kept
            for a, b in zip(layer.get_weights(), personal.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)
    assert not np.array_equal(base.layers[-1].get_weights()[0],
                              personal.get_layer('emotion').get_weights()[0])
    assert metadata.preprocess == base_metadata.preprocess
    assert metadata.label_names == base_metadata.label_names
    training = read_metadata(str(output)).training
    assert training['base_model'] == BASE_MODEL
    assert training['base_model_id'] == base_metadata.model_id
    assert training['sessions'] == {'train': ['alice-1'], 'validation': ['alice-2'],
                                    'test': ['alice-3']}
    assert [s['stage'] for s in training['variants'][0]['stages']] == ['head',
                                                                       'top 1 block(s)']
    classifier = FaceEmotionClassifier([str(output)], runtime='keras')
    assert classifier.classify_batch(np.zeros((2, 48, 48, 1), np.float32)).shape == (2, 7)
    report = json.loads((tmp_path / 'report' / 'face.json').read_text())
    rows = np.sum(FaceDataset.load(dataset_path).session_ids == 'alice-3')
    assert report['samples'] == rows > 0
    assert set(report['per_group_accuracy']) == {'alice-3'}
    assert 0 <= report['generic']['accuracy'] <= 1 and 0 <= report['personal']['accuracy'] <= 1
    assert (tmp_path / 'report' / 'face.md').is_file()


def test_ensemble_is_one_file_the_node_loads(dataset, tmp_path):
    from mika_perception.face_model import FaceEmotionClassifier, load_model
    split = face_tuning.split_by_session(dataset, ['alice-3'])
    base = face_tuning.TuningConfig(head_epochs=1, unfreeze_stages=0, batch_size=16)
    configs = [base.with_changes('learning_rate=1e-3'),
               base.with_changes('dropout=0.5,dense_units=16,seed=1')]
    output = str(tmp_path / 'ensemble.keras')
    training = face_tuning.tune_and_save(dataset, split, BASE_MODEL, output, configs, {},
                                         log=lambda _: None)
    assert len(training['variants']) == 2
    classifier = FaceEmotionClassifier([output], runtime='auto')  # loads with safe_mode
    assert classifier.runtimes in (['tflite'], ['keras'])
    if classifier.runtimes == ['keras']:  # a clean fallback says why
        assert classifier.runtime_notes
    model, metadata = load_model(output)
    x = dataset.inputs()[:8]
    members = [model.get_layer(f'member_{i}').predict_on_batch(x) for i in range(2)]
    order = [metadata.label_names.index(name) for name in EMOTION_LABELS]
    np.testing.assert_allclose(classifier.classify_batch(x),
                               np.mean(members, axis=0)[:, order], atol=1e-4)
    assert not np.allclose(members[0], members[1], atol=1e-3)  # two different members
