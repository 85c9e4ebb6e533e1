"""The whole frame path on real frames: convert, detect, track, classify with a real model."""
import cv2
import numpy as np
import pytest

from mika_perception.sample_frames import face_frame, three_face_frame
from mika_common.emotions import EMOTION_LABELS
from mika_perception.detection import create_detector
from mika_perception.image_conversion import image_to_bgr
from mika_perception.pipeline import STAGES, FacePipeline, annotate
from mika_perception.tracking import FaceTracker, TrackerConfig

cv2.setNumThreads(1)


@pytest.fixture(scope='module')
def classifier(tiny_face_model_path):
    from mika_perception.face_model import FaceEmotionClassifier
    return FaceEmotionClassifier([tiny_face_model_path], runtime='keras')


def make_pipeline(classifier, **kwargs):
    detector, _ = create_detector('auto')
    return FacePipeline(detector, FaceTracker(TrackerConfig(confirm_hits=2)), classifier,
                        **kwargs)


def test_real_frame_gives_one_tracked_face_with_probabilities(classifier):
    pipeline = make_pipeline(classifier)
    frame = face_frame()
    data = frame.tobytes()
    results = [pipeline.process_image(image_to_bgr('bgr8', 640, 480, 640 * 3, data), t)
               for t in (0.0, 0.033, 0.066)]
    assert results[0].faces == []  # confirmed on the second hit
    face = results[-1].faces[0]
    assert [len(r.faces) for r in results[1:]] == [1, 1]
    assert face.track_id == 1 and face.detected
    assert face.probabilities.shape == (len(EMOTION_LABELS),)
    assert abs(float(face.probabilities.sum()) - 1.0) < 1e-4
    assert face.label == EMOTION_LABELS[int(np.argmax(face.probabilities))]
    assert face.confidence == pytest.approx(float(face.probabilities.max()))
    x, y, w, h = face.box
    assert 0 <= x and x + w <= 640 and 0 <= y and y + h <= 480 and w > 60
    assert set(results[-1].timings) == set(STAGES)
    assert all(v >= 0 for v in results[-1].timings.values())
    # the same frame, classified directly: the pipeline adds nothing of its own
    direct = classifier.classify_faces(frame, [face.box])[0]
    np.testing.assert_allclose(face.probabilities, direct, atol=1e-6)


def test_three_faces_are_classified_in_one_batch_like_one_by_one(classifier):
    pipeline = make_pipeline(classifier)
    frame = three_face_frame()
    pipeline.process_image(frame, 0.0)
    faces = pipeline.process_image(frame, 0.033).faces
    # BlazeFace finds all three (test_detection); the Haar fallback misses the smallest
    assert len(faces) >= 2 and len({f.track_id for f in faces}) == len(faces)
    for face in faces:
        alone = classifier.classify_faces(frame, [face.box])[0]
        np.testing.assert_allclose(face.probabilities, alone, atol=1e-5)


def test_probabilities_are_smoothed_over_time(classifier):
    pipeline = make_pipeline(classifier, probability_time_constant_s=0.5)
    still = face_frame()
    pipeline.process_image(still, 0.0)
    before = pipeline.process_image(still, 0.1).faces[0].probabilities
    moved = face_frame(x=170, y=40)  # the face moved: another crop, other raw outputs
    face = pipeline.process_image(moved, 0.6).faces[0]
    raw = classifier.classify_faces(moved, [face.box])[0]
    assert np.abs(raw - before).max() > 1e-4
    keep = np.exp(-0.5 / 0.5)
    np.testing.assert_allclose(face.probabilities, keep * before + (1 - keep) * raw, atol=1e-5)
    pipeline.reset()
    assert pipeline.process_image(still, 1.0).faces == []  # tracks forgotten


def test_frames_with_one_stamp_still_update_the_probabilities(classifier):
    pipeline = make_pipeline(classifier, probability_time_constant_s=0.5)
    pipeline.process_image(face_frame(), 0.0)
    before = pipeline.process_image(face_frame(), 0.0).faces[0].probabilities
    moved = face_frame(x=170, y=40)
    face = pipeline.process_image(moved, 0.0).faces[0]  # a driver that never stamps
    raw = classifier.classify_faces(moved, [face.box])[0]
    keep = np.exp(-(1 / 30) / 0.5)  # counted as one frame at 30 fps
    np.testing.assert_allclose(face.probabilities, keep * before + (1 - keep) * raw, atol=1e-5)


def test_annotation_draws_on_a_copy(classifier):
    pipeline = make_pipeline(classifier)
    frame = face_frame()
    frame.flags.writeable = False
    pipeline.process_image(frame, 0.0)
    result = pipeline.process_image(frame, 0.033)
    drawn = annotate(frame, result)
    assert drawn.shape == frame.shape and not np.shares_memory(drawn, frame)
    x, y, w, h = result.faces[0].box
    assert (drawn[y + h // 2, x] != frame[y + h // 2, x]).any()  # the box edge


def test_benchmark_command_writes_its_table(tiny_face_model_path, tmp_path):
    from mika_perception.benchmark import main
    output = tmp_path / 'face.md'
    assert main(['--model', tiny_face_model_path, '--runtime', 'keras', '--frames', '4',
                 '--warmup', '2', '--memory-frames', '3', '--output', str(output)]) == 0
    table = output.read_text()
    for expected in ('640x480 rgb8, 1 face | detection', '1280x720 rgb8, 3 faces | **whole',
                     '640x480 jpeg, 1 face | conversion', 'Memory over 3 more frames',
                     'Goal (whole-frame p95'):
        assert expected in table
    assert main(['--model', str(tmp_path / 'missing.keras'), '--output', str(output)]) == 1
