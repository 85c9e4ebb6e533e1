"""ROS 2 node: microphone audio (audio_common_msgs) in, ``emotion/voice`` results out.

Thin on purpose: it converts messages, holds parameters and counts what goes wrong; the
work is :class:`mika_voice.pipeline.VoicePipeline`. Audio callbacks only decode and run
the VAD (well under a millisecond per 100 ms chunk) so stamps stay exact; features and
inference run on a worker thread behind a bounded queue whose drops are counted.

Two packages are called ``audio_common_msgs``: ros-drivers/audio_common (``AudioData``
bytes, ``AudioDataStamped``, ``AudioInfo`` with a GStreamer sample format; the
``audio_capture`` driver) and mgonzs13/audio_common (``AudioStamped`` with typed sample
arrays and an integer PortAudio format in every message). The node uses whichever is
installed.

Its parameters and the pipeline assembly are ROS-free, in :mod:`mika_voice.voice_parameters`.
``model_path`` can be changed at runtime: the new model is loaded beside the running one
and swapped in only once it loaded.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Dict, List, Optional

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from mika_common.diagnostics import NodeDiagnostics
from mika_common.echo import echo
from mika_common.node_params import ParameterSet
from mika_common.ros_io import (
    InputWatchdog, results_qos, run_node, sec_to_stamp, stamp_to_sec)
from mika_common.tensorflow_logging import quiet_tensorflow_start_up
from mika_msgs.msg import EmotionResult
from mika_voice import features
from mika_voice.audio_decoding import (
    PORTAUDIO_FORMATS, AudioFormatError, StreamFormat, typed_to_float)
from mika_voice.pipeline import (
    ArrivalStamper, BoundedWorker, ChunkOutcome, RealTimeMonitor, UtteranceRejected)
from mika_voice.voice_parameters import (  # PARAMETERS: the node's, checked by config tests
    PARAMETERS, SEGMENTER_PARAMETERS, assemble_voice_pipeline, default_model_path,
    feature_extractor, load_voice_classifier, make_segmenter, voice_model_id)

try:
    import audio_common_msgs.msg as audio_msgs
except ImportError:  # reported when the node starts, with how to get it
    audio_msgs = None

FLAVOUR_ROS_DRIVERS = 'ros-drivers'
FLAVOUR_MGONZS13 = 'mgonzs13'
STAMPED_GRACE_S = 2.0
#: Parameters that give the stream format until an AudioInfo arrives.
FORMAT_PARAMETERS = ('sample_rate', 'channels', 'sample_format', 'coding_format')


def audio_flavour() -> Optional[str]:
    """Which ``audio_common_msgs`` is installed (None: neither)."""
    if audio_msgs is None:
        return None
    if hasattr(audio_msgs, 'AudioDataStamped') and hasattr(audio_msgs, 'AudioInfo'):
        return FLAVOUR_ROS_DRIVERS
    if hasattr(audio_msgs, 'AudioStamped'):
        return FLAVOUR_MGONZS13
    return None


class VoiceNode(Node):
    """Subscribes the microphone, publishes one EmotionResult per utterance."""

    def __init__(self, **kwargs):
        super().__init__('voice_node', **kwargs)
        self.flavour = audio_flavour()
        if self.flavour is None:
            raise RuntimeError(
                'audio_common_msgs is not installed: `sudo apt install '
                'ros-$ROS_DISTRO-audio-common-msgs`, or run scripts/setup.sh, which builds '
                'the copy in compat/audio_common_msgs')
        self.params = ParameterSet(self, PARAMETERS, on_change=self._on_parameters)
        self.diagnostics = NodeDiagnostics(self, 'voice emotion', latency_warn_s=0.2)
        self.classifier = self._load_model()
        self.model_id = voice_model_id(self.classifier)

        self._lock = threading.Lock()  # pipeline state: audio callbacks vs parameter changes
        self._model_lock = threading.Lock()  # a classification vs a model swap
        self.pipeline, notes = assemble_voice_pipeline(self.params.values, self.classifier)
        for note in notes:
            self.get_logger().warning(note)
        self._info_format: Optional[StreamFormat] = None
        self._refused_format: Optional[str] = None
        self._frame_id = self.params['frame_id']
        self._source: Optional[str] = None
        self._last_stamped_arrival = -1e9
        self._first_plain_arrival: Optional[float] = None
        self._stamper = ArrivalStamper()
        self._realtime = RealTimeMonitor()
        self._last_forced_cuts = 0
        self._last_too_short = 0
        self._last_not_speech = 0
        self._apply_parameter_format()

        self._publisher = self.create_publisher(EmotionResult, 'emotion/voice', results_qos())
        self._worker = BoundedWorker(
            self._classify_and_publish, self._on_worker_error,
            max_pending=self.params['max_pending_utterances'],
            is_expendable=lambda item: item[0].running)
        self._subscribe()
        self.diagnostics.set_state('ok', f'waiting for audio ({self.flavour} audio_common_msgs)')
        self._warmed_up = threading.Event()
        threading.Thread(target=self._warm_up, name='mika-voice-warm-up', daemon=True).start()
        self.get_logger().info(f'ready: listening for {self.flavour} audio_common_msgs audio')

    # ----------------------------------------------------------------- start-up
    def _load_model(self):
        from mika_voice.voice_model import VoiceModelError
        path = self.params['model_path'] or default_model_path()
        try:
            classifier = load_voice_classifier(self.params.values)
        except VoiceModelError as error:
            super().destroy_node()  # nothing of a node that refuses to start stays behind
            raise RuntimeError(f'voice_node cannot start: {error}') from None
        self._log_runtime_notes(classifier)
        self.get_logger().info(f'voice model {path} ({classifier.metadata.model_id}, '
                               f'{_runtime(classifier)})')
        return classifier

    def _log_runtime_notes(self, classifier) -> None:
        for note in classifier.runtime_notes:  # LiteRT not cached or not used, and why
            self.get_logger().warning(note)

    def _warm_up(self) -> None:
        """Pay librosa's numba compilation and the first model call (2-4 s) while the node
        already listens: an utterance takes seconds to end, so a restarted node neither
        misses the start of the next one nor makes its first result wait."""
        try:
            seconds = features.warm_up()
            started = time.perf_counter()
            self.classifier.predict_proba(
                np.zeros((1, self.classifier.feature_dims), np.float32))
            self.get_logger().info(f'warmed up: features {seconds:.2f} s, classifier '
                                   f'{time.perf_counter() - started:.2f} s')
        except Exception as error:  # noqa: BLE001 - the first utterance will say it again
            self.get_logger().error(f'warm-up failed: {error!r}')
        finally:
            self._warmed_up.set()

    def _subscribe(self) -> None:
        watchdog = InputWatchdog(self, qos_parameter='reliability')
        reliability = self.params['reliability']
        if reliability == 'auto':
            reliability = 'best_effort' if self.flavour == FLAVOUR_MGONZS13 else 'reliable'
        audio_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=self.params['queue_depth'],
            reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                         else ReliabilityPolicy.BEST_EFFORT),
            durability=DurabilityPolicy.VOLATILE)
        if self.flavour == FLAVOUR_MGONZS13:
            watchdog.subscribe(audio_msgs.AudioStamped, 'audio', self._on_audio_stamped_typed,
                               audio_qos)
            self.get_logger().info('mgonzs13 audio_common_msgs: subscribing AudioStamped on '
                                   'audio (format from each message)')
            return
        mode = self.params['input']
        if mode in ('auto', 'stamped'):
            # 'auto': no silence warnings for a stamped topic that may not exist, but
            # rclpy's own warning if its publisher's QoS does not match
            subscribe = watchdog.subscribe if mode == 'stamped' else self.create_subscription
            self._stamped_sub = subscribe(audio_msgs.AudioDataStamped, 'audio_stamped',
                                          self._on_audio_stamped, audio_qos)
        if mode in ('auto', 'plain'):
            watchdog.subscribe(audio_msgs.AudioData, 'audio', self._on_audio_plain, audio_qos)
        # AudioInfo: audio_capture publishes it volatile every 5 s; other publishers latch
        # it (transient-local). One subscription of each kind hears both.
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        volatile = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                              reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        for qos in (latched, volatile):
            self._plain_subscribe(audio_msgs.AudioInfo, 'audio_info', self._on_info, qos)

    def _plain_subscribe(self, msg_type, topic, callback, qos):
        """A subscription that stays quiet about publishers of the other durability (of
        the AudioInfo pair, one always mismatches)."""
        try:
            from rclpy.event_handler import SubscriptionEventCallbacks
        except ImportError:  # Humble
            from rclpy.qos_event import SubscriptionEventCallbacks
        return self.create_subscription(
            msg_type, topic, callback, qos,
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=lambda info: None))

    # --------------------------------------------------------------- parameters
    def _on_parameters(self, changed: Dict) -> None:
        """Build and check what the change needs first and install it only when all of it
        succeeded: a ValueError refuses the whole change and the running state stays."""
        values = self.params.values
        classifier = self.classifier
        if 'model_path' in changed:
            classifier = self._load_replacement_model(values)
        rate = classifier.metadata.sample_rate
        segmenter = None
        if rate != self.pipeline.sample_rate or any(
                name in changed for name in SEGMENTER_PARAMETERS):
            segmenter, note = make_segmenter(values, rate)  # ValueError: the change is refused
            if note:
                self.get_logger().warning(note)
        formats = [name for name in FORMAT_PARAMETERS if name in changed]
        if formats and self._info_format is None:
            self._check_parameter_format()
        if classifier is not self.classifier:
            self._install_model(classifier, segmenter)
        elif segmenter is not None:
            with self._lock:
                segmenter.start_at(self.pipeline.segmenter.buffer.end_index)
                self.pipeline.segmenter = segmenter
        if 'max_clipped_fraction' in changed:
            self.pipeline.max_clipped_fraction = changed['max_clipped_fraction']
        if formats:
            if self._info_format is not None:
                self.get_logger().warning('format parameters changed, but the stream\'s '
                                          'AudioInfo decides while it is published')
            else:
                with self._lock:
                    self._apply_parameter_format()

    def _load_replacement_model(self, values):
        """The model of a runtime model_path change, loaded and warmed up on the executor
        thread while the worker classifies what it has; audio arriving meanwhile waits in
        the subscription's queue (``queue_depth``, 5 s by default) and keeps its stamps."""
        started = time.perf_counter()
        try:
            classifier = load_voice_classifier(values)
            classifier.predict_proba(np.zeros((1, classifier.feature_dims), np.float32))
        except (ValueError, RuntimeError, OSError) as error:  # VoiceModelError is one
            self.get_logger().warning(f'model_path change refused, the running model stays: '
                                      f'{error}')
            raise ValueError(str(error)) from None
        self._log_runtime_notes(classifier)
        self.get_logger().info(f'loaded voice model {classifier.path} ({_runtime(classifier)}) '
                               f'in {time.perf_counter() - started:.1f} s')
        return classifier

    def _install_model(self, classifier, segmenter) -> None:
        """Swap model, features and stream normaliser together, between classifications.
        The normaliser restarts from the new model's training statistics; a new segmenter
        (other parameters, or the model's sample rate) takes over the stream position, or
        restarts the stream where the rate differs."""
        p = self.params
        with self._model_lock, self._lock:
            pipeline = self.pipeline
            if segmenter is not None and segmenter.config.sample_rate == pipeline.sample_rate:
                segmenter.start_at(pipeline.segmenter.buffer.end_index)
                pipeline.segmenter = segmenter
            elif segmenter is not None:  # samples are counted at the model's rate
                stream_format = pipeline.decoder.format if pipeline.decoder else None
                pipeline.segmenter, pipeline.decoder = segmenter, None
                if stream_format is not None:
                    pipeline.set_format(stream_format)
            pipeline.classifier = classifier
            pipeline.features = feature_extractor(classifier)
            pipeline.normaliser = classifier.new_stream_normaliser(
                p['normaliser_prior_weight'], p['normaliser_half_life'])
            self.classifier = classifier
            self.model_id = voice_model_id(classifier)
        self.get_logger().info(f'voice model now running: {self.model_id} ({classifier.path})')

    def _check_parameter_format(self) -> None:
        p = self.params
        try:
            StreamFormat.from_fields(p['sample_rate'], p['channels'], p['sample_format'],
                                     p['coding_format'])
        except AudioFormatError as error:
            raise ValueError(str(error)) from None

    def _apply_parameter_format(self) -> None:
        p = self.params
        self._use_format(p['sample_rate'], p['channels'], p['sample_format'],
                         p['coding_format'], 'parameters')

    def _use_format(self, sample_rate, channels, sample_format, coding_format,
                    origin: str) -> bool:
        """Switch the decoder to this format; False (and counted) when it is unusable."""
        try:
            fmt = StreamFormat.from_fields(sample_rate, channels, sample_format,
                                           coding_format)
        except AudioFormatError as error:
            key = f'{origin}:{error}'
            if key != self._refused_format:
                self._refused_format = key
                self.get_logger().error(f'stream format from {origin} refused: {error}')
            self.diagnostics.reject(error.reason)
            self.diagnostics.set_state('error', f'audio format refused: {error}')
            self.pipeline.decoder = None
            return False
        self._refused_format = None
        change = self.pipeline.set_format(fmt)
        if change is not None:
            self.diagnostics.count('format_changes')
            self.get_logger().warning(f'stream format changed mid-stream ({origin}): {change}; '
                                      'the utterance in progress is discarded',
                                      throttle_duration_sec=5.0)
        return True

    # ------------------------------------------------------------------- input
    def _on_info(self, msg) -> None:
        fields = (int(msg.sample_rate), int(msg.channels), msg.sample_format,
                  msg.coding_format)
        if self._info_format == fields and self.pipeline.decoder is not None:
            return
        if self._info_format is None:
            self.get_logger().info(
                f'AudioInfo: {echo(msg.sample_format)} {msg.channels} ch {msg.sample_rate} Hz '
                f'{echo(msg.coding_format)}')
        self._info_format = fields
        with self._lock:
            self._use_format(*fields, origin='AudioInfo')

    def _prefer_stamped(self) -> bool:
        """'auto': skip plain AudioData while AudioDataStamped flows, and for up to
        STAMPED_GRACE_S while a stamped publisher exists but nothing came from it yet
        (then its QoS does not match, which rclpy reports, and plain audio is used)."""
        now = time.monotonic()
        if now - self._last_stamped_arrival < STAMPED_GRACE_S:
            return True
        if self.count_publishers(self._stamped_sub.topic_name) == 0:
            return False
        if self._first_plain_arrival is None:
            self._first_plain_arrival = now
        return now - self._first_plain_arrival < STAMPED_GRACE_S

    def _on_audio_stamped(self, msg) -> None:
        self._last_stamped_arrival = time.monotonic()
        self._switch_source('stamped')
        if msg.header.frame_id:
            self._frame_id = msg.header.frame_id
        self._accept(lambda: self.pipeline.accept_chunk(msg.audio.data,
                                                        stamp_to_sec(msg.header.stamp)))

    def _on_audio_plain(self, msg) -> None:
        arrival = self.get_clock().now().nanoseconds * 1e-9
        if self.params['input'] == 'auto' and self._prefer_stamped():
            return  # the same audio arrives with sensor stamps on audio_stamped
        self._switch_source('plain')
        decoder = self.pipeline.decoder
        if decoder is not None and len(msg.data) % decoder.format.bytes_per_frame == 0:
            duration = len(msg.data) / decoder.format.bytes_per_frame \
                / decoder.format.sample_rate
            stamp: Optional[float] = self._stamper.stamp(arrival, duration)
        else:
            stamp = None  # the chunk is refused below anyway
        self._accept(lambda: self.pipeline.accept_chunk(msg.data, stamp))

    def _on_audio_stamped_typed(self, msg) -> None:
        """mgonzs13 flavour: format in every message, samples in a typed array."""
        info = msg.audio.info
        entry = PORTAUDIO_FORMATS.get(int(info.format))
        if entry is None:
            self.diagnostics.reject('unknown_sample_format')
            self.get_logger().warning(
                f'AudioStamped with PortAudio format {info.format}: supported '
                f'{sorted(PORTAUDIO_FORMATS)}', throttle_duration_sec=5.0)
            return
        field, sample_format = entry
        fields = (int(info.rate), int(info.channels), sample_format, 'wave')
        if self._info_format != fields or self.pipeline.decoder is None:
            self._info_format = fields
            with self._lock:
                if not self._use_format(*fields, origin='AudioStamped.info'):
                    return
        if msg.header.frame_id:
            self._frame_id = msg.header.frame_id
        values = np.asarray(getattr(msg.audio.audio_data, field))

        def accept():
            if values.size == 0:
                raise AudioFormatError('format_mismatch', f'AudioStamped says format '
                                       f'{info.format} but its {field} is empty')
            frames, clipped = typed_to_float(values, sample_format, int(info.channels))
            return self.pipeline.accept_frames(frames, clipped,
                                               stamp_to_sec(msg.header.stamp))
        self._accept(accept)

    def _switch_source(self, source: str) -> None:
        if self._source == source:
            return
        if self._source is not None:
            self.get_logger().info(f'audio source: {self._source} -> {source}')
            with self._lock:
                self.pipeline.segmenter.reset()
        self._source = source
        self._stamper.reset()

    def _accept(self, run) -> None:
        """Decode and segment one chunk; count and warn about anything wrong with it."""
        if self.pipeline.decoder is None:
            self.diagnostics.reject('no_usable_format')
            self.get_logger().warning('audio dropped: the stream format is unusable (see '
                                      'the error above)', throttle_duration_sec=5.0)
            return
        with self._lock:
            jumps = self.pipeline.time_jumps
            try:
                outcome: ChunkOutcome = run()
            except AudioFormatError as error:
                self.diagnostics.reject(error.reason)
                self.get_logger().warning(f'audio chunk dropped: {error}',
                                          throttle_duration_sec=5.0)
                return
            segmenter = self.pipeline.segmenter
            forced, short = segmenter.forced_cuts, segmenter.too_short
            not_speech = segmenter.not_speech
        self._count_chunk(outcome, jumps, forced, short, not_speech)
        for utterance in outcome.utterances:
            self.diagnostics.count('running_windows' if utterance.running else 'utterances')
            dropped = self._worker.submit((utterance, time.perf_counter()))
            if dropped is not None:
                self.diagnostics.reject('classifier_busy')
                self.get_logger().warning(
                    'classifier busy: an utterance waiting longer than '
                    f'{self.params["max_pending_utterances"]} others was dropped '
                    '(audio arrives faster than it can be analysed)',
                    throttle_duration_sec=5.0)

    def _count_chunk(self, outcome: ChunkOutcome, jumps: int, forced: int,
                     short: int, not_speech: int) -> None:
        chunk = outcome.chunk
        self.diagnostics.count('chunks')
        if chunk.clipped:
            self.diagnostics.count('clipped_samples', chunk.clipped)
            self.get_logger().warning(
                f'{chunk.clipped} samples at digital full scale in one chunk: the '
                'microphone gain is too high', throttle_duration_sec=5.0)
        if outcome.gap_s > 0.05:
            self.diagnostics.count('gaps')
            self.get_logger().warning(
                f'{outcome.gap_s:.2f} s of audio missing before this chunk '
                '(lost messages or a paused driver)', throttle_duration_sec=5.0)
        if self.pipeline.time_jumps != jumps:
            self.diagnostics.count('time_jumps')
            self.get_logger().warning('audio stamps went back in time (a replay restarted?): '
                                      'segmentation restarted', throttle_duration_sec=5.0)
        if forced != self._last_forced_cuts:
            self._last_forced_cuts = forced
            self.diagnostics.count('long_speech_cuts')
        if short != self._last_too_short:
            self._last_too_short = short
            self.diagnostics.count('too_short')
        if not_speech != self._last_not_speech:  # stationary noise (a fan, hum) dropped
            self._last_not_speech = not_speech
            self.diagnostics.count('not_speech')
        now = time.monotonic()
        self._realtime.add(now, chunk.duration_s)
        factor = self._realtime.factor(now)
        if factor > self.params['burst_factor']:
            self.diagnostics.count('burst_chunks')
            self.diagnostics.set_state('warn', f'audio arriving at {factor:.1f}x real time')
            self.get_logger().warning(
                f'audio arrives at {factor:.1f}x real time (a replay burst, or the wrong '
                'sample_rate): utterances may be dropped', throttle_duration_sec=5.0)
        elif self._refused_format is None:
            self.diagnostics.set_state('ok', 'listening')

    # ------------------------------------------------------------------ output
    def _classify_and_publish(self, item) -> None:
        utterance, ready_at = item
        self._warmed_up.wait()
        try:
            with self._model_lock:  # model, features and normaliser of one and the same model
                estimate = self.pipeline.classify(utterance)
                model_id = self.model_id
        except UtteranceRejected as error:
            self.diagnostics.reject(error.reason)
            self.get_logger().warning(f'utterance not classified: {error}',
                                      throttle_duration_sec=5.0)
            return
        msg = EmotionResult()
        msg.header.stamp = sec_to_stamp(utterance.start_stamp)
        msg.header.frame_id = self._frame_id
        msg.modality = EmotionResult.MODALITY_VOICE
        msg.label_names = list(estimate.label_names)
        msg.probabilities = [float(p) for p in estimate.probabilities]
        msg.label = estimate.label
        msg.confidence = estimate.confidence
        msg.track_id = -1
        msg.utterance_start = sec_to_stamp(utterance.start_stamp)
        msg.utterance_end = sec_to_stamp(utterance.end_stamp)
        msg.model_id = model_id
        self._publisher.publish(msg)
        self.diagnostics.count('results')
        self.diagnostics.observe_latency(time.perf_counter() - ready_at)

    def _on_worker_error(self, item, error: BaseException) -> None:
        self.diagnostics.reject('internal_error')
        self.get_logger().error(f'utterance failed: {type(error).__name__}: {error}',
                                throttle_duration_sec=5.0)

    def destroy_node(self):
        worker = getattr(self, '_worker', None)
        if worker is not None:
            worker.stop()
        return super().destroy_node()


def _runtime(classifier) -> str:
    return classifier.runtime + (' cached' if classifier.from_cache else '')


def main(args: Optional[List[str]] = None) -> int:
    quiet_tensorflow_start_up()
    return run_node(VoiceNode, args)


if __name__ == '__main__':
    sys.exit(main())
