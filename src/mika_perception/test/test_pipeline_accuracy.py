"""The through-the-pipeline face benchmark on real FER-2013 faces rendered into frames."""
import math

import numpy as np
import pytest

from mika_common.workspace import shared_data_dir
from mika_perception.training import pipeline_accuracy as benchmark


@pytest.fixture(scope='module')
def public_faces():
    fer = shared_data_dir() / 'fer2013' / 'fer2013.npz'
    if not fer.is_file():
        pytest.skip(f'FER-2013 not found at {fer} (set MIKA_DATA)')
    from mika_perception.training.train_face import load_fer2013
    split = load_fer2013(str(fer))['public_test']
    chosen = np.random.default_rng(0).permutation(len(split))[:24]
    return split.images[chosen], split.labels[chosen]


def test_a_rendered_face_keeps_its_pixels_where_the_truth_says(public_faces):
    crop = public_faces[0][0]
    rng = np.random.default_rng(1)
    frame, truth = benchmark.render_face(crop, 96, benchmark.camera_backgrounds()[0], rng)
    assert frame.shape == (480, 640, 3) and abs(truth.angle_deg) <= 15
    half = truth.size / 2 * (1 + math.sqrt(2)) / 2  # inside the frame whatever the turn
    assert half <= truth.centre[0] <= 640 - half and half <= truth.centre[1] <= 480 - half


def test_the_node_path_finds_and_reads_close_faces(public_faces):
    from mika_perception.face_parameters import build_face_pipeline, node_defaults
    values = dict(node_defaults(), runtime='tflite')
    pipeline, classifier, _ = build_face_pipeline(values)
    images, labels = public_faces
    outcome = benchmark.run(images, labels, pipeline.detector, classifier, sizes=(256,))
    duplicated = np.arange(len(labels)) < 6
    summary = benchmark.summarise(labels, outcome, duplicated_in_train=duplicated)
    row = summary['sizes']['256']
    assert row['detection_rate'] >= 0.9  # blazeface_full alone found about half of these
    assert 0.0 <= row['accuracy'] <= 1.0 and len(row['per_class_recall']) == 7
    assert summary['pooled_40px_and_more']['faces'] == len(labels)
    assert summary['pooled_40px_and_more_not_in_train']['faces'] == len(labels) - 6
    table = benchmark.markdown(summary, 'test')
    assert '| 256 | 24 |' in table and '| pooled 40px and more not in train | 18 |' in table
