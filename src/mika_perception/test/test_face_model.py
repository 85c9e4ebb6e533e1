"""Model files, their metadata, and the classifier, on real FER-2013 faces."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
keras = pytest.importorskip('keras')

from mika_common import litert_cache  # noqa: E402
from mika_common.emotions import EMOTION_LABELS  # noqa: E402
from mika_common.testing import with_metadata_entry  # noqa: E402
from mika_perception.face_model import (  # noqa: E402
    DEFAULT_MODEL_PATH, METADATA_ENTRY, FaceEmotionClassifier, ModelFileError,
    ModelMetadata, load_model, read_metadata, save_model)
from mika_perception.preprocessing import PreprocessSpec, preprocess_face  # noqa: E402
from mika_perception.training.train_face import build_model, prepare  # noqa: E402

DATA = Path(os.environ.get('MIKA_DATA', Path(__file__).resolve().parents[3].parent
                           / 'shared' / 'data'))
FER = DATA / 'fer2013' / 'fer2013.npz'
SPEC = PreprocessSpec()


@pytest.fixture(scope='module')
def fer():
    if not FER.is_file():
        pytest.skip(f'FER-2013 not found at {FER} (set MIKA_DATA)')
    data = np.load(FER)
    public = np.flatnonzero(data['split'] == 'public_test')[::6]
    return {'test_images': data['images'][public], 'test_labels': data['labels'][public]}


def _small_model(seed):
    """The real architecture at width 8; seeded initial weights are enough to compare
    runtimes, batching and averaging (the shipped model is checked on faces below)."""
    keras.utils.set_random_seed(seed)
    return build_model(SPEC, width=8)


def _metadata(model_id, labels=EMOTION_LABELS):
    return ModelMetadata(label_names=list(labels), preprocess=SPEC, model_id=model_id,
                         training={'note': 'test'})


@pytest.fixture(scope='module', autouse=True)
def litert_cache_dir(tmp_path_factory):
    """This module's own LiteRT cache: the first TFLite classifier exports, later ones read."""
    with pytest.MonkeyPatch.context() as patch:
        directory = tmp_path_factory.mktemp('cache')
        patch.setenv('MIKA_CACHE_DIR', str(directory))
        yield directory


@pytest.fixture(scope='module')
def model_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp('models')
    paths = []
    for seed in (1, 2):
        path = str(directory / f'model{seed}.keras')
        save_model(_small_model(seed), path, _metadata(f'test-{seed}'))
        paths.append(path)
    return paths


@pytest.fixture(scope='module')
def faces(fer):
    return prepare(fer['test_images'][:16], SPEC)


@pytest.fixture(scope='module')
def keras_classifier(model_files):
    return FaceEmotionClassifier(model_files[0], runtime='keras')


@pytest.fixture(scope='module')
def lite_classifier(model_files):
    """Built once: each TFLite export takes seconds."""
    return FaceEmotionClassifier(model_files[0], runtime='tflite')


def test_round_trip_keeps_metadata_and_outputs(model_files, faces):
    model, metadata = load_model(model_files[0])
    assert metadata.label_names == list(EMOTION_LABELS)
    assert metadata.preprocess == SPEC
    assert metadata.model_id == 'test-1'
    assert metadata.training == {'note': 'test'}
    # Keras itself still reads the archive, with safe_mode, and gives the same outputs
    plain = keras.saving.load_model(model_files[0], compile=False, safe_mode=True)
    np.testing.assert_allclose(plain.predict_on_batch(faces), model.predict_on_batch(faces),
                               atol=1e-6)
    with zipfile.ZipFile(model_files[0]) as archive:
        stored = json.loads(archive.read(METADATA_ENTRY))
    assert stored['input_shape'] == [48, 48, 1]
    assert stored['preprocess']['version'] == SPEC.version


def test_model_file_carries_no_optimiser_state(model_files):
    model, _ = load_model(model_files[0])
    weights_bytes = sum(w.size for w in model.get_weights()) * 4
    assert os.path.getsize(model_files[0]) < 1.5 * weights_bytes + 200_000


def test_missing_and_corrupt_files_name_the_path_and_the_remedy(model_files, tmp_path):
    missing = str(tmp_path / 'nowhere.keras')
    with pytest.raises(ModelFileError, match='nowhere.keras.*no such file.*train_face'):
        load_model(missing)
    garbage = tmp_path / 'garbage.keras'
    garbage.write_bytes(os.urandom(2048))
    with pytest.raises(ModelFileError, match='garbage.keras.*corrupt'):
        load_model(str(garbage))
    truncated = tmp_path / 'truncated.keras'
    truncated.write_bytes(Path(model_files[0]).read_bytes()[:5000])
    with pytest.raises(ModelFileError, match='truncated.keras'):
        load_model(str(truncated))
    without_metadata = str(tmp_path / 'plain.keras')
    keras.saving.load_model(model_files[0], compile=False).save(without_metadata)
    with pytest.raises(ModelFileError, match='no mika.json'):
        read_metadata(without_metadata)


def test_metadata_with_foreign_labels_is_refused(model_files, tmp_path):
    path = tmp_path / 'foreign.keras'
    with zipfile.ZipFile(model_files[0]) as source, zipfile.ZipFile(path, 'w') as target:
        for entry in source.namelist():
            if entry != METADATA_ENTRY:
                target.writestr(entry, source.read(entry))
        stored = json.loads(source.read(METADATA_ENTRY))
        stored['label_names'][0] = 'contempt'
        target.writestr(METADATA_ENTRY, json.dumps(stored))
    with pytest.raises(ModelFileError, match='contempt'):
        load_model(str(path))


@pytest.mark.parametrize('payload, corrupt_deflate', [(b'[]', False), (b'null', False),
                                                     (None, True)])
def test_metadata_that_is_no_object_or_does_not_inflate_is_refused(
        model_files, tmp_path, payload, corrupt_deflate):
    """Once AttributeError / zlib.error, which killed the node: now a ModelFileError."""
    with zipfile.ZipFile(model_files[0]) as archive:
        payload = payload or archive.read(METADATA_ENTRY)
    path = str(with_metadata_entry(model_files[0], tmp_path / 'bad.keras', payload,
                                   corrupt_deflate=corrupt_deflate))
    for load in (read_metadata, load_model, FaceEmotionClassifier):
        with pytest.raises(ModelFileError, match='bad.keras.*train_face'):
            load(path)


def test_batch_equals_single(keras_classifier, lite_classifier, faces):
    for classifier in (keras_classifier, lite_classifier):
        batch = classifier.classify_batch(faces[:5])
        assert batch.shape == (5, 7)
        np.testing.assert_allclose(batch.sum(1), 1.0, atol=1e-5)
        for i in range(5):
            np.testing.assert_allclose(classifier.classify_batch(faces[i:i + 1])[0],
                                       batch[i], atol=1e-5)
        assert classifier.classify_batch(faces[:0]).shape == (0, 7)


def test_tflite_matches_keras_on_real_faces(keras_classifier, lite_classifier, faces):
    assert lite_classifier.runtimes == ['tflite']
    assert lite_classifier.parity_errors[0] <= 1e-4
    np.testing.assert_allclose(lite_classifier.classify_batch(faces),
                               keras_classifier.classify_batch(faces), atol=1e-4)


def test_a_second_load_serves_the_cached_export_without_importing_keras(
        model_files, lite_classifier, faces):
    assert lite_classifier.from_cache == [False]
    cached = FaceEmotionClassifier(model_files[0], runtime='tflite')
    assert cached.from_cache == [True] and cached.runtime_notes == []
    assert cached.parity_errors == lite_classifier.parity_errors
    np.testing.assert_array_equal(cached.classify_batch(faces),
                                  lite_classifier.classify_batch(faces))
    code = ('import sys; from mika_perception.face_model import FaceEmotionClassifier; '
            f'c = FaceEmotionClassifier({model_files[0]!r}); '
            "print(c.runtimes, c.from_cache, 'keras' in sys.modules, "
            "'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.split()[-4:] == ["['tflite']", '[True]', 'False', 'False'], done.stderr


def test_the_cache_serves_only_the_same_network(model_files, lite_classifier, tmp_path):
    other = FaceEmotionClassifier(model_files[1], runtime='tflite')  # other weights
    assert other.from_cache == [False]
    with zipfile.ZipFile(model_files[0]) as archive:  # same network, other metadata
        stored = json.loads(archive.read(METADATA_ENTRY))
    stored['model_id'] = 'renamed'
    renamed = str(with_metadata_entry(model_files[0], tmp_path / 'renamed.keras',
                                      json.dumps(stored).encode()))
    assert litert_cache.network_key(renamed) == litert_cache.network_key(model_files[0])
    classifier = FaceEmotionClassifier(renamed, runtime='tflite')
    assert classifier.from_cache == [True] and classifier.model_id == 'renamed'


def test_a_damaged_cache_entry_is_exported_again(model_files, lite_classifier, faces,
                                                 litert_cache_dir):
    entry = litert_cache.cache_dir() / f'{litert_cache.network_key(model_files[0])}.zip'
    assert entry.is_file() and entry.parent.parent == litert_cache_dir
    entry.write_bytes(entry.read_bytes()[:4000])  # cut short, as by a full disk
    rebuilt = FaceEmotionClassifier(model_files[0], runtime='tflite')
    assert rebuilt.from_cache == [False]
    assert 'damaged' in rebuilt.runtime_notes[0] and 'exporting it again' in \
        rebuilt.runtime_notes[0]
    np.testing.assert_allclose(rebuilt.classify_batch(faces),
                               lite_classifier.classify_batch(faces), atol=1e-6)
    assert FaceEmotionClassifier(model_files[0], runtime='tflite').from_cache == [True]


def test_auto_runtime_falls_back_to_keras_when_parity_fails(model_files, keras_classifier,
                                                           faces):
    strict = FaceEmotionClassifier(model_files[0], runtime='auto', parity_tolerance=-1.0)
    assert strict.runtimes == ['keras']
    assert 'differs from Keras' in strict.runtime_notes[0]
    np.testing.assert_allclose(strict.classify_batch(faces),
                               keras_classifier.classify_batch(faces), atol=1e-6)


def test_flip_tta_averages_the_mirror_image(model_files, keras_classifier, faces):
    plain = keras_classifier
    tta = FaceEmotionClassifier(model_files[0], runtime='keras', flip_tta=True)
    expected = (plain.classify_batch(faces) + plain.classify_batch(faces[:, :, ::-1])) / 2
    np.testing.assert_allclose(tta.classify_batch(faces), expected, atol=1e-5)
    assert not np.allclose(plain.classify_batch(faces), expected, atol=1e-4)
    assert tta.model_id == 'test-1+flip'


def test_ensemble_averages_its_members(model_files, faces):
    members = [FaceEmotionClassifier(p, runtime='keras') for p in model_files]
    ensemble = FaceEmotionClassifier(model_files, runtime='keras')
    expected = (members[0].classify_batch(faces) + members[1].classify_batch(faces)) / 2
    np.testing.assert_allclose(ensemble.classify_batch(faces), expected, atol=1e-5)
    assert ensemble.model_id == 'test-1+test-2'


def test_outputs_are_reordered_to_the_canonical_labels(model_files, keras_classifier, faces,
                                                       tmp_path):
    model, _ = load_model(model_files[0])
    reversed_labels = list(EMOTION_LABELS)[::-1]
    # same network with its output units reversed, declared as such in the metadata
    reversed_model = keras.Model(model.inputs, keras.ops.flip(model.outputs[0], axis=-1))
    path = str(tmp_path / 'reversed.keras')
    save_model(reversed_model, path, _metadata('reversed', reversed_labels))
    np.testing.assert_allclose(
        FaceEmotionClassifier(path, runtime='keras').classify_batch(faces),
        keras_classifier.classify_batch(faces), atol=1e-6)


def test_classify_faces_in_a_frame(keras_classifier, fer):
    crops = fer['test_images'][:3]
    frame = cv2.cvtColor(np.hstack(list(crops)), cv2.COLOR_GRAY2BGR)
    classifier = keras_classifier
    spec = classifier.spec
    boxes = [(48 * i, 0, 48, 48) for i in range(3)]
    expected = classifier.classify_batch(
        np.stack([preprocess_face(frame, box, spec) for box in boxes]))
    np.testing.assert_allclose(classifier.classify_faces(frame, boxes), expected, atol=1e-6)
    with pytest.raises(ValueError):
        classifier.classify_batch(np.zeros((1, 32, 32, 1), np.float32))


def test_default_model_recognises_public_test_faces(fer):
    if not os.path.isfile(DEFAULT_MODEL_PATH):
        pytest.skip(f'no default model at {DEFAULT_MODEL_PATH}')
    classifier = FaceEmotionClassifier(DEFAULT_MODEL_PATH, runtime='auto', flip_tta=True)
    assert classifier.runtimes == ['tflite'], classifier.runtime_notes
    probabilities = classifier.classify_batch(prepare(fer['test_images'], classifier.spec))
    accuracy = np.mean(probabilities.argmax(1) == fer['test_labels'])
    assert accuracy > 0.6, f'{accuracy:.3f} on {len(probabilities)} public_test faces'
