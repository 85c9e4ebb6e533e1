"""The face node's parameters and the face pipeline they configure, without ROS.

The node (:mod:`mika_perception.face_node`), offline evaluation
(:mod:`mika_evaluation.node_config`) and personal fine-tuning all validate a params file
against :data:`PARAMETERS` and build the pipeline with these functions, so one set of
values means the same detector, tracker and classifier everywhere.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple

import cv2

from mika_common.node_params import RELIABILITY_CHOICES, ParamSpec
from mika_perception.detection import DETECTORS, create_detector
from mika_perception.face_model import RUNTIMES, FaceEmotionClassifier
from mika_perception.image_conversion import DEFAULT_MAX_PIXELS
from mika_perception.pipeline import FacePipeline
from mika_perception.resources import FACE_MODEL_FILE, resolve_model_path
from mika_perception.tracking import FaceTracker, TrackerConfig

INPUT_TYPES = ('image', 'compressed')
#: Parameters that shape the pipeline: a change rebuilds detector, tracker or smoothing.
PIPELINE_PARAMETERS = (
    'detector', 'detector_min_score', 'detector_search_tiles', 'detector_search_min_score',
    'detector_idle_search_every',
    'min_face_px', 'haar_scale_factor', 'haar_min_neighbors', 'haar_max_width',
    'tracker_iou_threshold', 'tracker_centre_gate', 'tracker_confirm_hits',
    'tracker_max_misses', 'box_smoothing_min_cutoff_hz', 'box_smoothing_beta',
    'probability_time_constant_s')


def _non_empty_unique(paths: List[str]):
    if not paths or any(not p for p in paths):
        return 'model_paths needs at least one non-empty path'
    if len(set(paths)) != len(paths):
        return 'model_paths lists a file twice'
    return None


PARAMETERS = [
    ParamSpec('input_type', 'image', "Subscribe to sensor_msgs/Image on 'image' or to "
              "sensor_msgs/CompressedImage (jpeg, png) on 'image/compressed'.",
              choices=INPUT_TYPES, read_only=True),
    ParamSpec('reliability', 'best_effort', 'Camera subscription reliability (sensor QoS, '
              'depth 1); best_effort also hears reliable publishers.',
              choices=RELIABILITY_CHOICES, read_only=True),
    ParamSpec('model_paths', [FACE_MODEL_FILE], 'Face emotion model files (.keras with '
              'mika.json); several are averaged (an ensemble). Relative paths are taken in '
              'share/mika_perception/models. A runtime change loads the new files first and '
              'is refused, with the reason, if they do not load; the running model stays '
              'until then.', validator=_non_empty_unique),
    ParamSpec('runtime', 'auto', "Classifier runtime: tflite (fast; used only if it equals "
              "Keras within the parity tolerance), keras, or auto (tflite, else keras).",
              choices=RUNTIMES, read_only=True),
    ParamSpec('flip_tta', False, 'Average each face with its mirror image (test-time '
              'augmentation; about twice the classification time).'),
    ParamSpec('threads', 1, 'CPU threads for OpenCV, the detector and the classifier.',
              min_value=1, max_value=16, read_only=True),
    ParamSpec('detector', 'auto', 'Face detector: blazeface (both ranges: faces from ~5 m '
              'to filling the frame), blazeface_full (faces up to ~5 m, misses most close '
              'ones), blazeface_short (faces within ~2 m, fastest), haar (OpenCV, slow, no '
              'download) or auto (blazeface where its models were fetched at setup, else '
              'haar).', choices=DETECTORS),
    ParamSpec('detector_min_score', 0.5, 'BlazeFace: least detection score kept.',
              min_value=0.05, max_value=0.99),
    ParamSpec('detector_search_tiles', 3, 'blazeface: where neither range finds a face, '
              'look again with the short-range model on overlapping square tiles, coarse to '
              'fine down to 1/N of the frame\'s shorter side (3 at 640x480: 12 tiles of 240 '
              'px, then 24 of 160 px; finds faces of about 50-150 px; about 40 ms where it '
              'finds nothing, and a face it found is then followed by one small detection '
              'a frame). 0 or 1: no such search.', min_value=0, max_value=4),
    ParamSpec('detector_search_min_score', 0.7, 'blazeface: least score of a face found by '
              'the tiled search (stricter than detector_min_score: tiles of textured scenes '
              'with nobody in them gave false faces scoring 0.5-0.65).',
              min_value=0.05, max_value=0.99),
    ParamSpec('detector_idle_search_every', 3, 'blazeface: once the tiled search found '
              'nothing, run it only on every Nth frame until a face is seen (nobody in view '
              'costs about 1/N of the search; a small face walking in is found up to N-1 '
              'frames later). 1: every frame.', min_value=1, max_value=30),
    ParamSpec('min_face_px', 40, 'Faces smaller than this (pixels, shorter side) are ignored: '
              'too few pixels to read an expression.', min_value=8, max_value=2000),
    ParamSpec('haar_scale_factor', 1.1, 'Haar: scale step between detection sizes.',
              min_value=1.01, max_value=2.0),
    ParamSpec('haar_min_neighbors', 5, 'Haar: overlapping hits needed for a face (higher: '
              'fewer false faces, more misses).', min_value=1, max_value=30),
    ParamSpec('haar_max_width', 320, 'Haar: frames wider than this are shrunk first '
              '(speed); 0 keeps full resolution.', min_value=0, max_value=8192),
    ParamSpec('tracker_iou_threshold', 0.3, 'Least box overlap (IoU) matching a detection to '
              'a track.', min_value=0.01, max_value=1.0),
    ParamSpec('tracker_centre_gate', 0.5, 'Else the largest centre distance, in box sizes, '
              'still matched (fast motion).', min_value=0.0, max_value=5.0),
    ParamSpec('tracker_confirm_hits', 2, 'Frames a new face must be detected before it is '
              'reported (suppresses one-frame false detections).', min_value=1, max_value=30),
    ParamSpec('tracker_max_misses', 2, 'Consecutive frames without a detection before a '
              'track (and its id) is dropped.', min_value=0, max_value=300),
    ParamSpec('box_smoothing_min_cutoff_hz', 0.5, 'One-euro box filter: cutoff at rest '
              '(lower: steadier box).', min_value=0.01, max_value=30.0),
    ParamSpec('box_smoothing_beta', 0.01, 'One-euro box filter: speed coefficient (higher: '
              'less lag when the face moves).', min_value=0.0, max_value=1.0),
    ParamSpec('probability_time_constant_s', 0.3, 'Per-face exponential smoothing of the '
              'probabilities over time (s); 0 reports each frame on its own.',
              min_value=0.0, max_value=10.0),
    ParamSpec('max_rate_hz', 0.0, 'Process at most this many frames per second (the rest are '
              'skipped and counted); 0: as many as the worker keeps up with.',
              min_value=0.0, max_value=1000.0),
    ParamSpec('max_image_pixels', DEFAULT_MAX_PIXELS, 'Frames of more pixels (width x '
              'height) are dropped and counted; JPEG and PNG by the size their header '
              'declares, before decoding (a few hundred bytes can declare 20000x20000).',
              min_value=64 * 64, max_value=16384 * 16384),
    ParamSpec('publish_hri', True, 'Also publish ROS4HRI (REP-155) /humans/faces/tracked and '
              '/humans/faces/<id>/expression where hri_msgs is installed.'),
    ParamSpec('hri_id_prefix', 'face', 'ROS4HRI face ids are this prefix plus the track id.',
              read_only=True, validator=lambda v: None if v.isidentifier() else
              'hri_id_prefix must be letters, digits and underscores, not starting with a digit'),
    ParamSpec('latency_warn_ms', 100.0, 'Diagnostics turn WARN when the p95 frame latency '
              'exceeds this (ms).', min_value=1.0, max_value=10000.0, read_only=True),
]


def load_face_classifier(values: Mapping[str, Any],
                         model_paths: Optional[Sequence[str]] = None) -> FaceEmotionClassifier:
    """The classifier of ``model_paths`` (default: the values' ``model_paths``; relative
    paths are taken in the models directory) with the values' runtime, threads and flip.

    Raises ``ModelFileError`` (a RuntimeError naming the file and how to get one) for a
    missing or corrupt file, ``ValueError`` for ensemble members that disagree, and
    ``RuntimeError`` where runtime 'tflite' cannot be honoured.
    """
    paths = [resolve_model_path(path) for path in (model_paths or values['model_paths'])]
    return FaceEmotionClassifier(paths, flip_tta=values['flip_tta'], runtime=values['runtime'],
                                 num_threads=values['threads'])


def node_defaults() -> dict:
    """Every face node parameter at its default."""
    return {spec.name: spec.default for spec in PARAMETERS}


def create_face_detector(values: Mapping[str, Any]):
    """(detector, note) of the node's detector parameters in ``values``; see
    :func:`mika_perception.detection.create_detector`."""
    return create_detector(
        values['detector'], min_score=values['detector_min_score'],
        min_face_px=values['min_face_px'], haar_scale_factor=values['haar_scale_factor'],
        haar_min_neighbors=values['haar_min_neighbors'],
        haar_max_width=values['haar_max_width'], num_threads=values['threads'],
        search_tiles=values['detector_search_tiles'],
        search_min_score=values['detector_search_min_score'],
        idle_search_every=values['detector_idle_search_every'])


def assemble_face_pipeline(values: Mapping[str, Any], classifier
                           ) -> Tuple[FacePipeline, List[str]]:
    """Detector, tracker and smoothing of ``values`` around ``classifier``; the notes say
    what was used in place of what was asked (e.g. Haar where BlazeFace was not fetched)."""
    detector, note = create_face_detector(values)
    tracker = FaceTracker(TrackerConfig(
        iou_threshold=values['tracker_iou_threshold'],
        centre_gate=values['tracker_centre_gate'],
        confirm_hits=values['tracker_confirm_hits'],
        max_misses=values['tracker_max_misses'],
        min_cutoff_hz=values['box_smoothing_min_cutoff_hz'],
        beta=values['box_smoothing_beta']))
    pipeline = FacePipeline(detector, tracker, classifier, values['probability_time_constant_s'])
    return pipeline, [note] if note else []


def build_face_pipeline(values: Mapping[str, Any],
                        model_paths: Optional[Sequence[str]] = None):
    """The face pipeline as the node builds it at start: ``(pipeline, classifier, notes)``.

    Sets OpenCV's thread count to ``values['threads']`` (process-wide, as the node does);
    the notes are the classifier's runtime choices, then the detector's.
    """
    cv2.setNumThreads(values['threads'])
    classifier = load_face_classifier(values, model_paths)
    pipeline, notes = assemble_face_pipeline(values, classifier)
    return pipeline, classifier, list(classifier.runtime_notes) + notes
