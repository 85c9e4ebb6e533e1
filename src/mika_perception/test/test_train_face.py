"""The ROS-free training helpers: data loading, augmentation, weights and metrics."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from mika_common.emotions import EMOTION_LABELS
from mika_perception.face_parameters import create_face_detector, node_defaults
from mika_perception.preprocessing import PreprocessSpec
from mika_perception.training.pipeline_accuracy import detector_framed_crops
from mika_perception.training.train_face import (
    Split, augment, class_weights, classification_metrics, detector_framed_split, load_fer2013,
    load_image_folders)

DATA = Path(os.environ.get('MIKA_DATA', Path(__file__).resolve().parents[3].parent
                           / 'shared' / 'data'))
FER = DATA / 'fer2013' / 'fer2013.npz'


@pytest.fixture(scope='module')
def fer():
    if not FER.is_file():
        pytest.skip(f'FER-2013 not found at {FER} (set MIKA_DATA)')
    return load_fer2013(str(FER))


def test_official_split_sizes_and_duplicates(fer):
    assert {k: len(v) for k, v in fer.items()} == {
        'train': 28709, 'public_test': 3589, 'private_test': 3589}
    assert fer['private_test'].duplicated_in_train.sum() == 288
    assert fer['train'].images.shape[1:] == (48, 48)
    assert set(np.unique(fer['train'].labels)) == set(range(len(EMOTION_LABELS)))


def test_augmentation_is_conservative(fer):
    rng = np.random.default_rng(0)
    face = fer['train'].images[10]
    variants = [augment(face, rng) for _ in range(20)]
    assert all(v.shape == face.shape and v.dtype == np.uint8 for v in variants)
    # small geometry: every variant stays closer to the face or its mirror than to
    # another face
    other = fer['train'].images[11].astype(float)
    for v in variants:
        own = min(np.abs(v - face.astype(float)).mean(),
                  np.abs(v - face[:, ::-1].astype(float)).mean())
        assert own < np.abs(v - other).mean()
    assert len({v.tobytes() for v in variants}) == 20


def test_class_weights():
    labels = np.array([0] * 10 + [1] * 1 + [2] * 40 + [3] * 20 + [4] * 5 + [5] * 5 + [6] * 9)
    assert np.allclose(class_weights(labels, 0.0), 1.0)
    balanced = class_weights(labels, 1.0)
    counts = np.bincount(labels)
    assert np.allclose(balanced * counts, (balanced * counts)[0])  # every class weighs alike
    softened = class_weights(labels, 0.5)
    assert np.isclose(np.sum(softened * counts), counts.sum())  # mean sample weight 1
    assert softened[1] > softened[0] > softened[2]


def test_metrics_on_a_hand_example():
    labels = np.array([0, 0, 1, 3, 3, 3])
    predicted = np.array([0, 3, 1, 3, 3, 0])
    metrics = classification_metrics(labels, predicted)
    assert metrics['accuracy'] == pytest.approx(4 / 6)
    assert metrics['per_class_recall']['angry'] == pytest.approx(0.5)
    assert metrics['per_class_recall']['happy'] == pytest.approx(2 / 3)
    assert metrics['confusion_matrix'][0][3] == 1 and metrics['confusion_matrix'][3][0] == 1
    # F1: angry 0.5, disgust 1, happy 2/3, four absent classes 0
    assert metrics['macro_f1'] == pytest.approx((0.5 + 1 + 2 / 3) / 7)


def test_image_folders(fer, tmp_path):
    for label, index in (('happy', 0), ('sad', 1), ('contempt', 2)):
        folder = tmp_path / label
        folder.mkdir()
        face = cv2.resize(fer['train'].images[index], (96, 96))
        cv2.imwrite(str(folder / 'a.png'), cv2.cvtColor(face, cv2.COLOR_GRAY2BGR))
        (folder / 'notes.txt').write_text('not an image')
    split = load_image_folders(str(tmp_path), 48)
    assert split.images.shape == (2, 48, 48)
    assert [EMOTION_LABELS[i] for i in split.labels] == ['happy', 'sad']
    with pytest.raises(ValueError):
        load_image_folders(str(tmp_path / 'contempt'), 48)


def test_detector_framed_copies_are_the_node_crops_of_the_same_faces(fer):
    faces = fer['train']
    chosen = np.random.default_rng(0).permutation(len(faces))[:12]
    images = faces.images[chosen]
    detector, _ = create_face_detector(dict(node_defaults(), detector_idle_search_every=1))
    crops, found = detector_framed_crops(images, detector, PreprocessSpec(align_eyes=True), 0)
    assert 9 <= len(found) <= 12 and crops.shape == (len(found), 48, 48)
    # each crop is its face reframed and relit: it resembles its source more than the others
    sources = images.reshape(len(images), -1).astype(float)
    own, others = [], []
    for crop, index in zip(crops, found):
        correlations = np.array([np.corrcoef(crop.ravel().astype(float), source)[0, 1]
                                 for source in sources])
        own.append(correlations[index])
        others.append(np.median(np.delete(correlations, index)))
    assert np.mean(own) > np.mean(others) + 0.2
    split = Split(images, faces.labels[chosen])
    framed = detector_framed_split(split, PreprocessSpec(align_eyes=True), copies=1, seed=0)
    np.testing.assert_array_equal(framed.images, crops)  # the node's default detector
    np.testing.assert_array_equal(framed.labels, split.labels[found])
