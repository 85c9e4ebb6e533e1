"""Shared fixtures of mika_perception's tests.

Data come from ``$MIKA_DATA`` or ``<repo>/../shared/data``; tests that need them skip with
the reason when they are absent. Real face frames come from
:mod:`mika_perception.sample_frames` (scikit-image's public-domain astronaut photo).
"""
import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]


def data_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get('MIKA_DATA', REPO.parent / 'shared' / 'data'))


@pytest.fixture(scope='session')
def tiny_face_model_path(tmp_path_factory) -> str:
    """A small real model trained for a few seconds on FER-2013 through the model API.

    Not a good classifier: it lets the node and pipeline tests run real inference whether
    or not the shipped model file exists yet.
    """
    fer = data_dir() / 'fer2013' / 'fer2013.npz'
    if not fer.is_file():
        pytest.skip(f'FER-2013 not found at {fer} (set MIKA_DATA): no model to test with')
    import keras

    from mika_common.emotions import EMOTION_LABELS
    from mika_perception.face_model import ModelMetadata, save_model
    from mika_perception.preprocessing import PreprocessSpec, preprocess_crops

    data = np.load(fer)
    names = [str(n) for n in data['label_names']]
    train = np.flatnonzero(data['split'] == 'train')[:2000]
    spec = PreprocessSpec()
    x = preprocess_crops(data['images'][train], spec)
    y = np.array([EMOTION_LABELS.index(names[i]) for i in data['labels'][train]])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(spec.input_shape),
        keras.layers.Conv2D(8, 3, strides=2, activation='relu'),
        keras.layers.Conv2D(16, 3, strides=2, activation='relu'),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(len(EMOTION_LABELS), activation='softmax'),
    ])
    model.compile('adam', 'sparse_categorical_crossentropy')
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    path = str(tmp_path_factory.mktemp('face_model') / 'tiny.keras')
    save_model(model, path, ModelMetadata(list(EMOTION_LABELS), spec, 'test-tiny'))
    return path
