"""Shared fixtures: real media from the shared data, real models, small real bags.

Data come from ``$MIKA_DATA`` or ``<repo>/../shared/data``; tests that need them skip with
the reason when they are absent. Models: the shipped ones where they exist, else small real
models trained here in seconds through the packages' own model APIs (never faked outputs).
"""
import csv
import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
SHIPPED_FACE = REPO / 'src' / 'mika_perception' / 'models' / 'face_emotion.keras'
SHIPPED_VOICE = REPO / 'src' / 'mika_voice' / 'models' / 'voice_emotion.keras'


def data_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get('MIKA_DATA', REPO.parent / 'shared' / 'data'))


def require(path: pathlib.Path) -> pathlib.Path:
    if not path.exists():
        pytest.skip(f'{path} not found (set MIKA_DATA to the shared data folder)')
    return path


@pytest.fixture(scope='session')
def fer_path() -> pathlib.Path:
    return require(data_dir() / 'fer2013' / 'fer2013.npz')


@pytest.fixture(scope='session')
def emodb_dir() -> pathlib.Path:
    return require(data_dir() / 'emodb')


@pytest.fixture(scope='session')
def face_model_path(tmp_path_factory, fer_path) -> str:
    if SHIPPED_FACE.is_file():
        return str(SHIPPED_FACE)
    import keras

    from mika_common.emotions import EMOTION_LABELS
    from mika_perception.face_model import ModelMetadata, save_model
    from mika_perception.preprocessing import PreprocessSpec, preprocess_crops
    with np.load(fer_path) as data:
        names = [str(n) for n in data['label_names']]
        train = np.flatnonzero(data['split'] == 'train')[:2000]
        images, labels = data['images'][train], data['labels'][train]
    spec = PreprocessSpec()
    x = preprocess_crops(images, spec)
    y = np.array([EMOTION_LABELS.index(names[i]) for i in labels])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(spec.input_shape),
        keras.layers.Conv2D(8, 3, strides=2, activation='relu'),
        keras.layers.Conv2D(16, 3, strides=2, activation='relu'),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(len(EMOTION_LABELS), activation='softmax')])
    model.compile('adam', 'sparse_categorical_crossentropy')
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    path = str(tmp_path_factory.mktemp('face_model') / 'tiny_face.keras')
    save_model(model, path, ModelMetadata(list(EMOTION_LABELS), spec, 'eval-test-tiny'))
    return path


@pytest.fixture(scope='session')
def voice_model_path(tmp_path_factory) -> str:
    if SHIPPED_VOICE.is_file():
        return str(SHIPPED_VOICE)
    import soundfile

    from mika_common.emotions import EMOTION_LABELS
    from mika_voice.testing import train_tiny_voice_model
    table = require(data_dir() / 'ravdess' / 'labels.csv')
    with open(table, newline='') as handle:
        rows = [r for r in csv.DictReader(handle) if r['label']]
    chosen = []
    for label in EMOTION_LABELS:
        chosen += [r for r in rows if r['label'] == label][:4]
    return train_tiny_voice_model(
        [soundfile.read(table.parent / r['path'], dtype='float32')[0] for r in chosen],
        [r['speaker_or_subject'] for r in chosen], [r['label'] for r in chosen],
        tmp_path_factory.mktemp('voice_model') / 'tiny_voice.keras', 'eval-test-tiny')


@pytest.fixture(scope='session')
def small_sources(fer_path, emodb_dir):
    """FER-2013 private_test faces and two EmoDB speakers (held out from the
    RAVDESS-trained voice model: another corpus)."""
    from mika_evaluation.bag_builder import FaceSource, VoiceSource
    return (FaceSource.from_fer2013(fer_path),
            VoiceSource.from_corpus(emodb_dir, speakers=['03', '08']))


SMALL_LAYOUT = dict(segments=3, utterances_per_segment=1, fps=15.0, seed=1)


@pytest.fixture(scope='session')
def small_layout():
    """The layout of small_bags, for tests that build a variant of them."""
    return dict(SMALL_LAYOUT)


@pytest.fixture(scope='session')
def small_bags(tmp_path_factory, small_sources):
    """The same short labelled bag in both storage formats: {storage: (bag, labels csv)}."""
    from mika_evaluation.bag_builder import LayoutConfig, build
    faces, voices = small_sources
    root = tmp_path_factory.mktemp('bags')
    bags = {}
    for storage in ('mcap', 'sqlite3'):
        manifest = build(root / f'small_{storage}', faces, voices, LayoutConfig(**SMALL_LAYOUT),
                         storage=storage)
        bags[storage] = (root / f'small_{storage}', pathlib.Path(manifest['labels_csv']))
    return bags
