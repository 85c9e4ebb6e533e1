"""Tracker: stable ids through missed detections, hysteresis, a still rectangle."""
import numpy as np
import pytest

from mika_perception.sample_frames import face_frame
from mika_perception.detection import Detection, create_detector
from mika_perception.tracking import FaceTracker, OneEuroFilter, TrackerConfig

FPS = 30.0


def run(tracker, frames):
    """frames: list of lists of boxes; returns the tracker output of every frame."""
    return [tracker.update([Detection(b, 0.9) for b in boxes], i / FPS)
            for i, boxes in enumerate(frames)]


def test_id_survives_a_single_missed_detection_and_keeps_its_box():
    face = (100.0, 100.0, 80.0, 80.0)
    out = run(FaceTracker(TrackerConfig(confirm_hits=2, max_misses=1)),
              [[face], [face], [], [face], [face]])
    assert out[0] == []  # not yet confirmed
    assert [[t.track_id for t in frame] for frame in out[1:]] == [[1], [1], [1], [1]]
    coasting = out[2][0]
    assert not coasting.detected and coasting.misses == 1
    assert coasting.box == out[1][0].box  # the rectangle stays where it was


def test_track_is_dropped_after_max_misses_and_a_new_face_gets_a_new_id():
    face = (100.0, 100.0, 80.0, 80.0)
    out = run(FaceTracker(TrackerConfig(confirm_hits=1, max_misses=2)),
              [[face], [], [], [], [face]])
    assert [len(frame) for frame in out] == [1, 1, 1, 0, 1]
    assert out[4][0].track_id == 2


def test_a_one_frame_false_detection_never_shows():
    face, ghost = (100.0, 100.0, 80.0, 80.0), (400.0, 50.0, 40.0, 40.0)
    out = run(FaceTracker(TrackerConfig(confirm_hits=2)),
              [[face], [face, ghost], [face], [face, ghost], [face]])
    assert all([t.track_id for t in frame] == [1] for frame in out[1:])
    assert out[-1][0].age == 5


def test_two_faces_keep_their_ids_when_detection_order_swaps_and_they_move_fast():
    out = []
    tracker = FaceTracker()
    for i in range(20):
        left = (100.0 + 12 * i, 200.0, 80.0, 80.0)   # 360 px/s: IoU with the last frame < 0.3
        right = (500.0 - 12 * i, 100.0, 60.0, 60.0)
        out.append(tracker.update([Detection(b, 0.9) for b in
                                   ([left, right] if i % 2 else [right, left])], i / FPS))
    ids = {t.track_id: t.box[2] for t in out[-1]}
    assert len(ids) == 2 and set(ids) == {1, 2}
    assert ids[1] != ids[2]
    for frame in out[1:]:
        assert {t.track_id: round(t.box[2]) for t in frame} == {
            t.track_id: round(t.box[2]) for t in out[-1]}


def test_rectangle_does_not_flicker_on_detector_jitter():
    rng = np.random.default_rng(1)
    truth = np.array([200.0, 150.0, 120.0, 120.0])
    noisy = [truth + rng.normal(0, 3.0, 4) for _ in range(90)]
    out = run(FaceTracker(), [[tuple(b)] for b in noisy])
    smoothed = np.array([frame[0].box for frame in out[10:]])
    raw = np.array(noisy[10:])
    # flicker = how far the rectangle's edges move from one frame to the next
    assert np.abs(np.diff(smoothed, axis=0)).mean() < 0.2 * np.abs(np.diff(raw, axis=0)).mean()
    assert np.abs(smoothed.mean(axis=0) - truth).max() < 2.0


def test_one_euro_follows_motion_with_little_lag():
    config = TrackerConfig()
    smoother = OneEuroFilter(config.min_cutoff_hz, config.beta, config.derivative_cutoff_hz)
    positions = [smoother(np.array([10.0 * i]), i / FPS)[0] for i in range(60)]  # 300 px/s
    assert 590 - positions[-1] < 15  # under 1.5 frames of lag


def test_real_detector_keeps_one_id_on_a_moving_real_face():
    detector, _ = create_detector('auto')
    tracker = FaceTracker()
    ids = set()
    for i in range(12):
        frame = face_frame(640, 480, face_side=300, x=100 + 15 * i, y=80 + 5 * i)
        ids |= {t.track_id for t in tracker.update(detector.detect(frame), i / FPS)}
    assert ids == {1}


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError):
        TrackerConfig(iou_threshold=0.0)
    with pytest.raises(ValueError):
        TrackerConfig(confirm_hits=0)


def test_ids_are_given_on_confirmation_so_false_detections_use_none():
    face, ghost = (100.0, 100.0, 80.0, 80.0), (400.0, 50.0, 40.0, 40.0)
    out = run(FaceTracker(TrackerConfig(confirm_hits=2)),
              [[ghost], [], [ghost], [face], [face], [face]])
    assert [[t.track_id for t in frame] for frame in out] == [[], [], [], [], [1], [1]]
