"""The shared face preprocessing on real FER-2013 faces and on synthetic frames."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from mika_perception.preprocessing import (
    PREPROCESS_VERSION, PreprocessSpec, crop_with_margin, preprocess_face, preprocess_faces,
    to_grey)

DATA = Path(os.environ.get('MIKA_DATA', Path(__file__).resolve().parents[3].parent
                           / 'shared' / 'data'))
FER = DATA / 'fer2013' / 'fer2013.npz'


@pytest.fixture(scope='module')
def fer_faces():
    if not FER.is_file():
        pytest.skip(f'FER-2013 not found at {FER} (set MIKA_DATA)')
    data = np.load(FER)
    return data['images'][:64]


def test_fer_crop_becomes_model_input(fer_faces):
    spec = PreprocessSpec()
    x = preprocess_face(fer_faces[0], None, spec)
    assert x.shape == (48, 48, 1) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    # histogram equalisation spreads every non-blank face over (almost) the full range
    assert x.max() - x.min() > 1.8


def test_scaling_and_equalisation_options(fer_faces):
    face = fer_faces[1]
    plain = preprocess_face(face, None, PreprocessSpec(equalisation='none', scaling='unit'))
    np.testing.assert_allclose(plain[:, :, 0], face / 255.0, atol=1e-6)
    hist = preprocess_face(face, None, PreprocessSpec(equalisation='hist', scaling='unit'))
    np.testing.assert_allclose(hist[:, :, 0], cv2.equalizeHist(face) / 255.0, atol=1e-6)
    clahe = preprocess_face(face, None, PreprocessSpec(equalisation='clahe'))
    assert not np.allclose(clahe, preprocess_face(face, None, PreprocessSpec()))


def test_box_in_a_colour_frame_matches_the_crop(fer_faces):
    """A face pasted into a BGR frame gives the same input as the crop itself."""
    face = fer_faces[2]
    big = cv2.resize(face, (96, 96), interpolation=cv2.INTER_LINEAR)
    frame = np.full((240, 320, 3), 90, np.uint8)
    frame[50:146, 100:196] = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
    spec = PreprocessSpec(margin=0.0)
    from_frame = preprocess_face(frame, (100, 50, 96, 96), spec)
    from_crop = preprocess_face(cv2.resize(big, (48, 48), interpolation=cv2.INTER_AREA),
                                None, spec)
    np.testing.assert_allclose(from_frame, from_crop, atol=1e-6)


def test_margin_is_clipped_to_the_image():
    image = np.arange(100 * 80, dtype=np.uint32).reshape(100, 80).astype(np.uint8)
    assert crop_with_margin(image, (10, 20, 40, 50), 0.1).shape == (60, 48)
    assert crop_with_margin(image, (0, 0, 80, 100), 0.5).shape == (100, 80)
    assert crop_with_margin(image, (70, 90, 40, 40), 0.0).shape == (10, 10)
    with pytest.raises(ValueError):
        crop_with_margin(image, (200, 200, 10, 10), 0.1)
    with pytest.raises(ValueError):
        crop_with_margin(image, (10, 10, 0, 10), 0.1)
    with pytest.raises(ValueError):
        preprocess_face(np.zeros((0, 0), np.uint8))


def test_grey_conversions():
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 2] = 255  # pure red
    assert to_grey(bgr)[0, 0] == cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[0, 0] == 76
    assert to_grey(np.dstack([bgr, np.zeros((4, 4), np.uint8)]))[0, 0] == 76
    assert to_grey(np.full((4, 4), 65535, np.uint16))[0, 0] == 255
    with pytest.raises(ValueError):
        to_grey(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError):
        to_grey(np.zeros((4, 4, 2), np.uint8))


def test_batch_equals_single(fer_faces):
    frame = cv2.cvtColor(np.hstack(list(fer_faces[:4])), cv2.COLOR_GRAY2BGR)
    boxes = [(48 * i, 0, 48, 48) for i in range(4)]
    spec = PreprocessSpec(margin=0.0)
    batch = preprocess_faces(frame, boxes, spec)
    assert batch.shape == (4, 48, 48, 1)
    for i, box in enumerate(boxes):
        np.testing.assert_array_equal(batch[i], preprocess_face(frame, box, spec))
    assert preprocess_faces(frame, [], spec).shape == (0, 48, 48, 1)


def test_spec_round_trips_and_rejects_bad_values():
    spec = PreprocessSpec(size=64, margin=0.2, equalisation='clahe', scaling='unit')
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()['version'] == PREPROCESS_VERSION
    assert spec.input_shape == (64, 64, 1)
    for bad in ({'equalisation': 'gamma'}, {'scaling': 'z'}, {'margin': -0.1},
                {'size': 2}, {'version': 'mika-face-preprocess/0'}):
        with pytest.raises(ValueError):
            PreprocessSpec(**bad)
    with pytest.raises(ValueError):
        PreprocessSpec.from_dict({**spec.to_dict(), 'gamma': 1.0})
