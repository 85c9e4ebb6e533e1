"""The shared face preprocessing on real FER-2013 faces and on synthetic frames."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from mika_perception.preprocessing import (
    PREPROCESS_VERSION, PreprocessSpec, crop_with_margin, face_crop, preprocess_face,
    preprocess_faces, to_grey)
from mika_perception.sample_frames import face_box_in_frame, face_frame

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


def test_a_version_1_spec_reads_as_the_same_framing_without_eye_alignment():
    old = {'size': 48, 'margin': 0.1, 'equalisation': 'hist', 'scaling': 'symmetric',
           'clahe_clip_limit': 2.0, 'clahe_tile': 4, 'version': 'mika-face-preprocess/1'}
    spec = PreprocessSpec.from_dict(old)
    assert spec == PreprocessSpec() and not spec.align_eyes
    assert spec.version == PREPROCESS_VERSION


ALIGNED = PreprocessSpec(align_eyes=True)


def test_aligned_crop_of_an_upright_face_matches_the_plain_crop():
    frame = face_frame(640, 480, face_side=300, x=170, y=90)
    box = tuple(int(v) for v in face_box_in_frame(300, 170, 90))
    plain = face_crop(frame, box, PreprocessSpec()).astype(float)
    aligned = face_crop(frame, box, ALIGNED, roll_deg=0.0).astype(float)
    assert np.mean(np.abs(plain - aligned)) < 3.0  # resampling differs, not the framing


def test_aligned_crop_undoes_the_roll_of_a_turned_face():
    frame = face_frame(640, 480, face_side=300, x=170, y=90)
    box = face_box_in_frame(300, 170, 90)
    centre = (box[0] + box[2] / 2, box[1] + box[3] / 2)
    upright = face_crop(frame, box, ALIGNED, roll_deg=0.0).astype(float)
    turned = cv2.warpAffine(frame, cv2.getRotationMatrix2D(centre, 15, 1.0), (640, 480),
                            borderMode=cv2.BORDER_REPLICATE)
    # the detector reports a face turned 15 degrees counter-clockwise as a roll of -15
    undone = face_crop(turned, box, ALIGNED, roll_deg=-15.0).astype(float)
    left_turned = face_crop(turned, box, ALIGNED, roll_deg=0.0).astype(float)
    assert np.mean(np.abs(undone - upright)) < 4.0
    assert np.mean(np.abs(left_turned - upright)) > 2 * np.mean(np.abs(undone - upright))


def test_aligned_crop_past_the_frame_edge_keeps_the_face_shape():
    frame = face_frame(640, 480, face_side=470, x=85, y=5)
    box = face_box_in_frame(470, 85, 5)  # the 10% margin reaches past top and bottom
    aligned = face_crop(frame, box, ALIGNED, roll_deg=0.0)
    assert aligned.shape == (48, 48)
    inside = face_crop(np.pad(frame, ((60, 60), (0, 0), (0, 0)), mode='edge'),
                       (box[0], box[1] + 60, box[2], box[3]), PreprocessSpec())
    # same as cutting it from a frame extended by its own edge rows, not a stretched crop
    assert np.mean(np.abs(aligned.astype(float) - inside.astype(float))) < 3.0
    with pytest.raises(ValueError):
        face_crop(frame, (700, 10, 40, 40), ALIGNED, roll_deg=0.0)


def test_roll_angles_must_match_the_boxes():
    frame = face_frame()
    with pytest.raises(ValueError, match='roll'):
        preprocess_faces(frame, [(10, 10, 50, 50)], ALIGNED, rolls_deg=[0.0, 1.0])
