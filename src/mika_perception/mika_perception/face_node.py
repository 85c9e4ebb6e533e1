"""ROS 2 node: camera frames in, one ``emotion/face`` result per tracked face out.

Thin on purpose: it converts messages, holds parameters and counts what goes wrong; the
work is :class:`mika_perception.pipeline.FacePipeline`. The image callback only hands the
newest frame to a worker thread (a newer frame replaces one not yet processed, and that
drop is counted), so inference never blocks the executor. Where ``hri_msgs`` is installed
the node also speaks ROS4HRI (REP-155): ``/humans/faces/tracked`` and
``/humans/faces/<id>/expression``.
"""
from __future__ import annotations

import threading
import time
from typing import Dict, List

import cv2
import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest

from mika_common.diagnostics import NodeDiagnostics
from mika_common.emotions import EMOTION_LABELS, valence_arousal_of
from mika_common.latest_worker import LatestOnlyWorker
from mika_common.node_params import ParameterSet, ParamSpec
from mika_common.ros_io import (
    RELIABILITY_CHOICES, InputWatchdog, results_qos, run_node, sensor_qos, stamp_to_sec)
from mika_msgs.msg import EmotionResult
from mika_perception.detection import DETECTORS, create_detector
from mika_perception.face_model import FaceEmotionClassifier
from mika_perception.image_conversion import ImageConverter, ImageFormatError
from mika_perception.pipeline import FacePipeline, FrameResult, annotate
from mika_perception.resources import FACE_MODEL_FILE, resolve_model_path
from mika_perception.tracking import FaceTracker, TrackerConfig

try:
    from hri_msgs.msg import Expression, IdsList
except ImportError:  # said once at start; the node works without it
    Expression = IdsList = None

INPUT_TYPES = ('image', 'compressed')
RUNTIMES = ('auto', 'tflite', 'keras')
#: A frame stamped this much earlier than the last one restarts tracking (a bag looped).
TIME_JUMP_BACK_S = 1.0
HRI_EXPRESSIONS = {'angry': 'ANGRY', 'disgust': 'DISGUSTED', 'fear': 'SCARED',
                   'happy': 'HAPPY', 'sad': 'SAD', 'surprise': 'SURPRISED',
                   'neutral': 'NEUTRAL'}
#: Parameters that shape the pipeline: a change rebuilds detector, tracker or smoothing.
PIPELINE_PARAMETERS = (
    'detector', 'detector_min_score', 'min_face_px', 'haar_scale_factor',
    'haar_min_neighbors', 'haar_max_width', 'tracker_iou_threshold', 'tracker_centre_gate',
    'tracker_confirm_hits', 'tracker_max_misses', 'box_smoothing_min_cutoff_hz',
    'box_smoothing_beta', 'probability_time_constant_s')


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
              'share/mika_perception/models.', read_only=True, validator=_non_empty_unique),
    ParamSpec('runtime', 'auto', "Classifier runtime: tflite (fast; used only if it equals "
              "Keras within the parity tolerance), keras, or auto (tflite, else keras).",
              choices=RUNTIMES, read_only=True),
    ParamSpec('flip_tta', False, 'Average each face with its mirror image (test-time '
              'augmentation; about twice the classification time).'),
    ParamSpec('threads', 1, 'CPU threads for OpenCV, the detector and the classifier.',
              min_value=1, max_value=16, read_only=True),
    ParamSpec('detector', 'auto', 'Face detector: blazeface_full (faces up to ~5 m), '
              'blazeface_short (faces within ~2 m, fastest), haar (OpenCV, slow, no download) '
              'or auto (blazeface_full where its model was fetched at setup, else haar).',
              choices=DETECTORS),
    ParamSpec('detector_min_score', 0.5, 'BlazeFace: least detection score kept.',
              min_value=0.05, max_value=0.99),
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
    ParamSpec('publish_hri', True, 'Also publish ROS4HRI (REP-155) /humans/faces/tracked and '
              '/humans/faces/<id>/expression where hri_msgs is installed.'),
    ParamSpec('hri_id_prefix', 'face', 'ROS4HRI face ids are this prefix plus the track id.',
              read_only=True, validator=lambda v: None if v.isidentifier() else
              'hri_id_prefix must be letters, digits and underscores, not starting with a digit'),
    ParamSpec('latency_warn_ms', 100.0, 'Diagnostics turn WARN when the p95 frame latency '
              'exceeds this (ms).', min_value=1.0, max_value=10000.0, read_only=True),
]


class FaceNode(Node):
    """Subscribes to the camera, runs the face pipeline off the executor, publishes results."""

    def __init__(self, **kwargs):
        super().__init__('face_node', **kwargs)
        self._params = ParameterSet(self, PARAMETERS, on_change=self._on_parameters)
        p = self._params
        cv2.setNumThreads(p['threads'])
        paths = [resolve_model_path(path) for path in p['model_paths']]
        # Missing or corrupt model: ModelFileError names the path and how to get one.
        self._classifier = FaceEmotionClassifier(paths, flip_tta=p['flip_tta'],
                                                 runtime=p['runtime'], num_threads=p['threads'])
        for note in self._classifier.runtime_notes:
            self.get_logger().warning(note)
        self._converter = ImageConverter()
        self._lock = threading.Lock()  # the pipeline is rebuilt on parameter changes
        self._pipeline = self._build_pipeline(dict(p.values))
        self._last_stamp = None
        self._last_submitted = 0.0
        self._failing = False

        self._diagnostics = NodeDiagnostics(self, 'face emotion',
                                            latency_warn_s=p['latency_warn_ms'] / 1e3)
        self._results = self.create_publisher(EmotionResult, 'emotion/face', results_qos())
        self._debug = self.create_publisher(Image, 'emotion/face/debug_image', sensor_qos())
        self._hri_tracked = None
        self._hri_expressions: Dict[str, object] = {}
        if IdsList is None:
            self.get_logger().info('hri_msgs is not installed: the ROS4HRI topics '
                                   '(/humans/faces/...) are not published.')
        elif p['publish_hri']:
            self._hri_tracked = self.create_publisher(IdsList, '/humans/faces/tracked',
                                                      results_qos())

        self._worker = LatestOnlyWorker(self._process, self._on_error, name='face-worker')
        watchdog = InputWatchdog(self, qos_parameter='reliability')
        self._input_type = p['input_type']
        topic, msg_type = (('image', Image) if self._input_type == 'image'
                           else ('image/compressed', CompressedImage))
        watchdog.subscribe(msg_type, topic, self._on_frame, sensor_qos(p['reliability']),
                           callback_group=MutuallyExclusiveCallbackGroup())
        self._diagnostics.set_state('ok', self._describe())
        self.get_logger().info(f'ready: {self._describe()}; listening on '
                               f'{self.resolve_topic_name(topic)} ({msg_type.__name__})')

    def _describe(self) -> str:
        return (f'detector {self._pipeline.detector.name}, model {self._classifier.model_id} '
                f'({"/".join(self._classifier.runtimes)}), conversion {self._converter.backend}')

    def _build_pipeline(self, values) -> FacePipeline:
        detector, note = create_detector(
            values['detector'], min_score=values['detector_min_score'],
            min_face_px=values['min_face_px'], haar_scale_factor=values['haar_scale_factor'],
            haar_min_neighbors=values['haar_min_neighbors'],
            haar_max_width=values['haar_max_width'], num_threads=self._params['threads'])
        if note:
            self.get_logger().warning(note)
        tracker = FaceTracker(TrackerConfig(
            iou_threshold=values['tracker_iou_threshold'],
            centre_gate=values['tracker_centre_gate'],
            confirm_hits=values['tracker_confirm_hits'],
            max_misses=values['tracker_max_misses'],
            min_cutoff_hz=values['box_smoothing_min_cutoff_hz'],
            beta=values['box_smoothing_beta']))
        return FacePipeline(detector, tracker, self._classifier,
                            values['probability_time_constant_s'])

    def _on_parameters(self, changed) -> None:
        if 'flip_tta' in changed:
            self._classifier.flip_tta = changed['flip_tta']
        if any(name in changed for name in PIPELINE_PARAMETERS):
            values = dict(self._params.values)
            try:
                pipeline = self._build_pipeline(values)
            except (OSError, RuntimeError) as error:  # e.g. a BlazeFace model not fetched
                raise ValueError(str(error)) from None
            with self._lock:
                self._pipeline = pipeline
        if changed.get('publish_hri') and IdsList is not None and self._hri_tracked is None:
            self._hri_tracked = self.create_publisher(IdsList, '/humans/faces/tracked',
                                                      results_qos())

    # ------------------------------------------------------------------ executor side
    def _on_frame(self, msg) -> None:
        self._diagnostics.count('frames')
        max_rate = self._params['max_rate_hz']
        now = time.monotonic()
        if max_rate > 0 and now - self._last_submitted < 1.0 / max_rate:
            self._diagnostics.count('skipped (max_rate_hz)')
            return
        self._last_submitted = now
        if self._worker.submit(msg):
            self._diagnostics.count('dropped (worker busy)')

    # ------------------------------------------------------------------ worker side
    def _process(self, msg) -> None:
        start = time.perf_counter()
        try:
            image = (self._converter.image(msg) if self._input_type == 'image'
                     else self._converter.compressed(msg))
        except ImageFormatError as error:
            self._diagnostics.reject(error.reason)
            self.get_logger().warning(f'frame dropped: {error}', throttle_duration_sec=5.0)
            return
        conversion_s = time.perf_counter() - start
        stamp = stamp_to_sec(msg.header.stamp)
        if stamp == 0.0:  # a driver that does not stamp: track on arrival time instead
            self.get_logger().warning('camera frames have no header stamp: tracking and '
                                      'smoothing use their arrival time; results keep the '
                                      'zero stamp', throttle_duration_sec=60.0)
            stamp = self.get_clock().now().nanoseconds * 1e-9
        with self._lock:
            if self._last_stamp is not None and stamp < self._last_stamp - TIME_JUMP_BACK_S:
                self.get_logger().info('camera time jumped back: tracks restarted')
                self._pipeline.reset()
            self._last_stamp = stamp
            result = self._pipeline.process_image(image, stamp, conversion_s)
        for face in result.faces:
            self._results.publish(self._emotion_result(msg.header, face))
        if self._debug.get_subscription_count() > 0:
            self._debug.publish(_bgr_to_image(annotate(image, result), msg.header))
        if self._hri_tracked is not None and self._params['publish_hri']:
            self._publish_hri(msg.header, result)
        if self._failing:
            self._failing = False
            self._diagnostics.set_state('ok', self._describe())
        self._diagnostics.count('processed')
        self._diagnostics.count('faces', len(result.faces))
        self._diagnostics.observe_latency(time.perf_counter() - start)

    def _emotion_result(self, header, face) -> EmotionResult:
        x, y, w, h = face.box
        return EmotionResult(
            header=header, modality=EmotionResult.MODALITY_FACE,
            label_names=list(EMOTION_LABELS),
            probabilities=[float(v) for v in face.probabilities],
            label=face.label, confidence=float(face.confidence), track_id=face.track_id,
            face_roi=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h),
            model_id=self._classifier.model_id)

    def _publish_hri(self, header, result: FrameResult) -> None:
        prefix = self._params['hri_id_prefix']
        ids = [f'{prefix}{face.track_id}' for face in result.faces]
        self._hri_tracked.publish(IdsList(header=header, ids=ids))
        for face_id, face in zip(ids, result.faces):
            publisher = self._hri_expressions.get(face_id)
            if publisher is None:
                publisher = self.create_publisher(
                    Expression, f'/humans/faces/{face_id}/expression', results_qos())
                self._hri_expressions[face_id] = publisher
            # expected valence/arousal under the face's probabilities
            valence, arousal = np.asarray(
                [valence_arousal_of(label) for label in EMOTION_LABELS]).T @ face.probabilities
            publisher.publish(Expression(
                header=header, expression=getattr(Expression, HRI_EXPRESSIONS[face.label]),
                valence=float(valence), arousal=float(arousal),
                confidence=float(face.confidence)))
        for face_id in set(self._hri_expressions) - set(ids):
            self.destroy_publisher(self._hri_expressions.pop(face_id))

    def _on_error(self, msg, error: BaseException) -> None:
        self._failing = True
        self._diagnostics.count('errors')
        self._diagnostics.set_state('error', f'frame processing failed: {error!r}')
        self.get_logger().error(f'frame processing failed: {error!r}',
                                throttle_duration_sec=5.0)

    def destroy_node(self):
        worker = getattr(self, '_worker', None)  # absent when __init__ refused to start
        if worker is not None:
            worker.stop()
        return super().destroy_node()


def _bgr_to_image(bgr: np.ndarray, header) -> Image:
    height, width = bgr.shape[:2]
    return Image(header=header, height=height, width=width, encoding='bgr8',
                 is_bigendian=0, step=width * 3, data=np.ascontiguousarray(bgr).tobytes())


def main(args=None) -> int:
    return run_node(FaceNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
