"""ROS 2 node: camera frames in, one ``emotion/face`` result per tracked face out.

Thin on purpose: it converts messages, holds parameters and counts what goes wrong; the
work is :class:`mika_perception.pipeline.FacePipeline`. The image callback only hands the
newest frame to a worker thread (a newer frame replaces one not yet processed, and that
drop is counted), so inference never blocks the executor. Where ``hri_msgs`` is installed
the node also speaks ROS4HRI (REP-155): ``/humans/faces/tracked`` and
``/humans/faces/<id>/expression``. Its parameters and the pipeline assembly are ROS-free,
in :mod:`mika_perception.face_parameters`. ``model_paths`` can be changed at runtime: the
new model is loaded beside the running one and swapped in only once it loaded.
"""
from __future__ import annotations

import threading
import time
from typing import Dict

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest

from mika_common.diagnostics import NodeDiagnostics
from mika_common.emotions import EMOTION_LABELS, valence_arousal_of
from mika_common.latest_worker import LatestOnlyWorker
from mika_common.node_params import ParameterSet
from mika_common.ros_io import InputWatchdog, results_qos, run_node, sensor_qos, stamp_to_sec
from mika_common.tensorflow_logging import quiet_tensorflow_start_up
from mika_msgs.msg import EmotionResult
from mika_perception.face_model import FaceEmotionClassifier
from mika_perception.face_parameters import (  # PARAMETERS: the node's, checked by config tests
    PARAMETERS, PIPELINE_PARAMETERS, assemble_face_pipeline, build_face_pipeline,
    load_face_classifier)
from mika_perception.image_conversion import ImageConverter, ImageFormatError
from mika_perception.pipeline import FrameResult, annotate

try:
    from hri_msgs.msg import Expression, IdsList
except ImportError:  # said once at start; the node works without it
    Expression = IdsList = None

#: A frame stamped this much earlier than the last one restarts tracking (a bag looped).
TIME_JUMP_BACK_S = 1.0
HRI_EXPRESSIONS = {'angry': 'ANGRY', 'disgust': 'DISGUSTED', 'fear': 'SCARED',
                   'happy': 'HAPPY', 'sad': 'SAD', 'surprise': 'SURPRISED',
                   'neutral': 'NEUTRAL'}


class FaceNode(Node):
    """Subscribes to the camera, runs the face pipeline off the executor, publishes results."""

    def __init__(self, **kwargs):
        super().__init__('face_node', **kwargs)
        self._params = ParameterSet(self, PARAMETERS, on_change=self._on_parameters)
        p = self._params
        # Missing or corrupt model: ModelFileError names the path and how to get one.
        self._pipeline, self._classifier, notes = build_face_pipeline(p.values)
        for note in notes:
            self.get_logger().warning(note)
        self._converter = ImageConverter(max_pixels=p['max_image_pixels'])
        self._lock = threading.Lock()  # the pipeline and model change on parameter changes
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
        watchdog.subscribe(msg_type, topic, self._on_frame, sensor_qos(p['reliability']))
        self._diagnostics.set_state('ok', self._describe())
        self.get_logger().info(f'ready: {self._describe()}; listening on '
                               f'{self.resolve_topic_name(topic)} ({msg_type.__name__})')

    def _describe(self) -> str:
        runtimes = '/'.join(name + (' cached' if cached else '') for name, cached in zip(
            self._classifier.runtimes, self._classifier.from_cache))
        return (f'detector {self._pipeline.detector.name}, model {self._classifier.model_id} '
                f'({runtimes}), conversion {self._converter.backend}')

    def _on_parameters(self, changed) -> None:
        """Build what the change needs first and install it only when all of it succeeded:
        a ValueError refuses the whole change and the running pipeline and model stay."""
        values = self._params.values
        classifier = self._classifier
        if 'model_paths' in changed:
            classifier = self._load_classifier(values)
        pipeline = None
        if any(name in changed for name in PIPELINE_PARAMETERS):
            try:
                pipeline, notes = assemble_face_pipeline(values, classifier)
            except (OSError, RuntimeError) as error:  # e.g. a BlazeFace model not fetched
                raise ValueError(str(error)) from None
            for note in notes:
                self.get_logger().warning(note)
        if 'flip_tta' in changed:
            classifier.flip_tta = changed['flip_tta']
        if 'max_image_pixels' in changed:
            self._converter.max_pixels = changed['max_image_pixels']
        swapped = classifier is not self._classifier
        with self._lock:
            if pipeline is not None:
                self._pipeline = pipeline
            else:  # tracks and their smoothing carry on across a model change
                self._pipeline.classifier = classifier
            self._classifier = classifier
        if swapped:
            self.get_logger().info(f'face model now running: {self._describe()} from '
                                   f'{", ".join(values["model_paths"])}')
            if not self._failing:
                self._diagnostics.set_state('ok', self._describe())
        if changed.get('publish_hri') and IdsList is not None and self._hri_tracked is None:
            self._hri_tracked = self.create_publisher(IdsList, '/humans/faces/tracked',
                                                      results_qos())

    def _load_classifier(self, values) -> FaceEmotionClassifier:
        """The model files of a runtime model_paths change, loaded on the executor thread:
        the worker finishes the frame it holds, newer frames wait and only the newest is
        taken after the load. Takes a few seconds with the TFLite parity check (not when
        the LiteRT cache holds the model)."""
        started = time.perf_counter()
        try:
            classifier = load_face_classifier(values)
        except (ValueError, RuntimeError, OSError) as error:  # ModelFileError is one
            self.get_logger().warning(f'model_paths change refused, the running model stays: '
                                      f'{error}')
            raise ValueError(str(error)) from None
        for note in classifier.runtime_notes:
            self.get_logger().warning(note)
        self.get_logger().info(f'loaded {classifier.model_id} in '
                               f'{time.perf_counter() - started:.1f} s')
        return classifier

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
            model_id = self._pipeline.classifier.model_id  # the model of this very result
        for face in result.faces:
            self._results.publish(self._emotion_result(msg.header, face, model_id))
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

    def _emotion_result(self, header, face, model_id: str) -> EmotionResult:
        x, y, w, h = face.box
        return EmotionResult(
            header=header, modality=EmotionResult.MODALITY_FACE,
            label_names=list(EMOTION_LABELS),
            probabilities=[float(v) for v in face.probabilities],
            label=face.label, confidence=float(face.confidence), track_id=face.track_id,
            face_roi=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h),
            model_id=model_id)

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
    quiet_tensorflow_start_up()
    return run_node(FaceNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
