"""ROS 2 node: prompts a person through the emotions and records camera and microphone.

Thin on purpose: the prompts and labels are :class:`~mika_personal.prompt_schedule.
PromptSchedule`, the files are :class:`~mika_personal.session_writer.SessionWriter`, the
image and audio checks are the face and voice nodes' own (``image_conversion``,
``audio_decoding``). The first prompt comes once every enabled input has delivered a
message (until then the watchdog names the silent topic). Each prompt is published on
``~/prompt`` (``std_msgs/String``, latched: a robot can say or show it) and logged.

Nothing is stored unless ``output_dir`` is set. The session appears there only once it is
whole; Ctrl-C finalises what was recorded, marked ``partial: true`` in session.yaml, with
the interrupted prompt labelled only up to the moment of the stop. Messages are written with
their arrival time as bag time (as ``ros2 bag record`` does) and keep their header stamps.

One executor thread serves the inputs and the schedule; a storing thread serialises and
writes. rclpy's MultiThreadedExecutor (9.x) submits a task that waits for a worker to its
thread pool again on every turn of its loop (ros2/rclpy#1223). Measured on an idle 2-core
machine: its main thread spun at full CPU holding the GIL (11000-15000 submissions of 50
callbacks in 4-5 s), prompts came up to 3 s late, 4-10 frames of 50 were stored, and a
Ctrl-C once waited 10 s for the pool to get through the copies. Writing off the executor
thread keeps a slow disk from delaying a prompt.
"""
from __future__ import annotations

import functools
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from mika_common.emotions import EMOTION_LABELS
from mika_common.node_params import ParameterSet, ParamSpec
from mika_common.ros_io import (
    RELIABILITY_CHOICES, InputWatchdog, latched_qos, run_node, sensor_qos, stamp_to_sec)
from mika_perception.image_conversion import (
    ImageFormatError, compressed_msg_to_bgr, image_msg_to_bgr)
from mika_personal.prompt_schedule import (
    PromptRunner, PromptSchedule, ScheduleConfig, check_emotions)
from mika_personal.session_writer import IMAGE_STORAGES, SessionWriter
from mika_personal.sessions import SessionError
from mika_voice.audio_decoding import (
    SAMPLE_FORMATS, AudioFormatError, StreamFormat, pcm_to_float)
from mika_voice.pipeline import ArrivalStamper

try:  # Iron and newer
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

try:
    import audio_common_msgs.msg as audio_msgs
except ImportError:  # reported at start when audio is enabled
    audio_msgs = None

CAMERA_CHOICES = ('image', 'compressed', 'none')
AUDIO_CHOICES = ('stamped', 'plain', 'none')
TICK_S = 0.05
MAX_QUEUED_FRAMES = 30  # 2 s at 15 FPS: a disk that falls behind costs frames, not memory

PARAMETERS = [
    ParamSpec('output_dir', '', 'Folder that receives the session as <output_dir>/'
              '<session_id>/ (bag/, labels.csv, session.yaml); empty: the prompts run and '
              'the inputs are checked, but nothing is stored.', read_only=True),
    ParamSpec('person', '', 'Who is recorded; sessions of one person are fine-tuned '
              'together. Required when output_dir is set.', read_only=True),
    ParamSpec('session_id', '', 'Name of the session folder; empty: '
              '<person>-<local date>-<time>. An existing session is never overwritten.',
              read_only=True),
    ParamSpec('emotions', list(EMOTION_LABELS), 'Emotions prompted, in this order.',
              read_only=True, validator=check_emotions),
    ParamSpec('seconds_per_emotion', 20.0, 'Free expression: how long each emotion is '
              'shown (s); unused when lines_per_emotion > 0.', min_value=0.1,
              max_value=600.0, read_only=True),
    ParamSpec('lines_per_emotion', 0, 'Lines read aloud per emotion; 0: free expression '
              'for seconds_per_emotion.', min_value=0, max_value=100, read_only=True),
    ParamSpec('seconds_per_line', 5.0, 'Time for each line (s).', min_value=0.1,
              max_value=60.0, read_only=True),
    ParamSpec('lines_file', '', 'Text file with one line to read per line ("happy: ..." '
              'for one emotion only, # comments); empty: built-in neutral sentences.',
              read_only=True),
    ParamSpec('pause_s', 4.0, 'Unlabelled pause between emotions (s).', min_value=0.0,
              max_value=120.0, read_only=True),
    ParamSpec('settle_s', 1.0, 'The first seconds of each emotion are not labelled: the '
              'person is still changing expression.', min_value=0.0, max_value=60.0,
              read_only=True),
    ParamSpec('lead_in_s', 3.0, 'Time from the start of recording to the first prompt (s).',
              min_value=0.0, max_value=120.0, read_only=True),
    ParamSpec('camera', 'image', "Camera input: 'image' (sensor_msgs/Image on image), "
              "'compressed' (sensor_msgs/CompressedImage on image/compressed) or 'none'.",
              choices=CAMERA_CHOICES, read_only=True),
    ParamSpec('camera_reliability', 'best_effort', 'Camera subscription reliability '
              '(sensor QoS); best_effort also hears reliable publishers.',
              choices=RELIABILITY_CHOICES, read_only=True),
    ParamSpec('max_frame_rate_hz', 15.0, 'Store at most this many camera frames per second '
              '(0: every frame).', min_value=0.0, max_value=240.0, read_only=True),
    ParamSpec('image_storage', 'raw', 'Image frames stored as raw bgr8 Image (exact '
              'pixels; 640x480 at 15 FPS: 13.8 MB/s) or jpeg CompressedImage (about '
              '0.8 MB/s); compressed input is stored as received.', choices=IMAGE_STORAGES,
              read_only=True),
    ParamSpec('jpeg_quality', 95, 'JPEG quality when image_storage is jpeg.', min_value=50,
              max_value=100, read_only=True),
    ParamSpec('audio', 'stamped', "Microphone input (ros-drivers audio_common_msgs): "
              "'stamped' (AudioDataStamped on audio_stamped), 'plain' (AudioData on audio, "
              "stamped on arrival) or 'none'.", choices=AUDIO_CHOICES, read_only=True),
    ParamSpec('audio_reliability', 'reliable', 'Audio subscription reliability '
              '(audio_capture publishes reliable).', choices=RELIABILITY_CHOICES,
              read_only=True),
    ParamSpec('sample_rate', 16000, 'Stream sample rate (Hz) until an AudioInfo arrives.',
              min_value=4000, max_value=384000, read_only=True),
    ParamSpec('channels', 1, 'Interleaved channels until an AudioInfo arrives.',
              min_value=1, max_value=64, read_only=True),
    ParamSpec('sample_format', 'S16LE', 'Sample format until an AudioInfo arrives (stored '
              'as S16LE).', choices=tuple(SAMPLE_FORMATS), read_only=True),
]


class RecorderNode(Node):
    """Runs the prompt schedule and, where told to, writes the session."""

    def __init__(self, **kwargs):
        super().__init__('recorder', **kwargs)
        self.params = p = ParameterSet(self, PARAMETERS)
        if p['camera'] == 'none' and p['audio'] == 'none':
            raise ValueError('camera and audio are both none: nothing to record')
        if p['audio'] != 'none' and audio_msgs is None:
            raise RuntimeError('audio_common_msgs is not installed (scripts/setup.sh builds '
                               "the copy in compat/audio_common_msgs); or set audio:=none")
        self.schedule = PromptSchedule(ScheduleConfig(
            emotions=tuple(p['emotions']), seconds_per_emotion=p['seconds_per_emotion'],
            lines_per_emotion=p['lines_per_emotion'], seconds_per_line=p['seconds_per_line'],
            pause_s=p['pause_s'], settle_s=p['settle_s'], lead_in_s=p['lead_in_s']),
            Path(p['lines_file']) if p['lines_file'] else None)
        self._format = StreamFormat.from_fields(p['sample_rate'], p['channels'],
                                                p['sample_format'])
        self._stamper = ArrivalStamper()
        self.runner = PromptRunner(self.schedule)
        self._last_frame_kept = -1e18
        self._heard = {'camera': p['camera'] == 'none', 'audio': p['audio'] == 'none'}
        self.finished = False
        self._stopped: Optional[Tuple[float, bool]] = None  # (stop time, interrupted)
        self.session_dir: Optional[Path] = None
        self._prompts = self.create_publisher(String, '~/prompt', latched_qos())
        self._subscribe()
        self.writer = self._open_writer()  # last: a refusal above leaves no folder behind
        self._queue: 'queue.SimpleQueue[Optional[Callable[[], None]]]' = queue.SimpleQueue()
        self._frame_slots = threading.BoundedSemaphore(MAX_QUEUED_FRAMES)
        self._storing = threading.Thread(target=self._store_queued, name='recorder-storing',
                                         daemon=True)
        if self.writer is not None:
            self._storing.start()
        self._timer = self.create_timer(TICK_S, self._tick)
        self.get_logger().info(f'schedule: {self.schedule.describe()}')
        self.get_logger().info(f'prompts on {self._prompts.topic_name}; waiting for '
                               f'{self._inputs_text()} before the first prompt')

    # ----------------------------------------------------------------- start-up
    def _open_writer(self) -> Optional[SessionWriter]:
        p = self.params
        if not p['output_dir']:
            self.get_logger().warning('output_dir is empty: the prompts run and the inputs '
                                      'are checked, but nothing is stored')
            return None
        if not p['person']:
            raise ValueError('person is empty: name the person recorded (person:=<name>)')
        session_id = p['session_id'] or f'{p["person"]}-{time.strftime("%Y%m%d-%H%M%S")}'
        writer = SessionWriter(Path(p['output_dir']).expanduser(), session_id, p['person'],
                               'live', image_storage=p['image_storage'],
                               jpeg_quality=p['jpeg_quality'],
                               notes=f'schedule: {self.schedule.describe()}')
        self.get_logger().info(f'recording session {writer.final_dir} (written in '
                               f'{writer.work_dir} until it is complete)')
        return writer

    def _subscribe(self) -> None:
        p = self.params
        self._topics: List[str] = []
        if p['camera'] != 'none':
            watchdog = InputWatchdog(self, qos_parameter='camera_reliability')
            topic, msg_type = (('image', Image) if p['camera'] == 'image'
                               else ('image/compressed', CompressedImage))
            sub = watchdog.subscribe(msg_type, topic, self._on_frame,
                                     sensor_qos(p['camera_reliability']))
            self._topics.append(f'camera on {sub.topic_name} ({msg_type.__name__})')
        if p['audio'] != 'none':
            audio_qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=50,
                reliability=(ReliabilityPolicy.RELIABLE if p['audio_reliability'] == 'reliable'
                             else ReliabilityPolicy.BEST_EFFORT),
                durability=DurabilityPolicy.VOLATILE)
            watchdog = InputWatchdog(self, qos_parameter='audio_reliability')
            if p['audio'] == 'stamped':
                sub = watchdog.subscribe(audio_msgs.AudioDataStamped, 'audio_stamped',
                                         self._on_audio_stamped, audio_qos)
            else:
                sub = watchdog.subscribe(audio_msgs.AudioData, 'audio', self._on_audio_plain,
                                         audio_qos)
            self._topics.append(f'microphone on {sub.topic_name}')
            # AudioInfo: audio_capture publishes it volatile, others latch it; hear both
            # (one of the pair always mismatches the publisher: no warning for that)
            for durability in (DurabilityPolicy.TRANSIENT_LOCAL, DurabilityPolicy.VOLATILE):
                self.create_subscription(
                    audio_msgs.AudioInfo, 'audio_info', self._on_info,
                    QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                               reliability=ReliabilityPolicy.RELIABLE, durability=durability),
                    event_callbacks=SubscriptionEventCallbacks(
                        incompatible_qos=lambda info: None))

    def _inputs_text(self) -> str:
        return ' and '.join(self._topics)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------- input
    def _recording(self) -> Optional[SessionWriter]:
        """The writer while the schedule runs (None before, after, or when not storing)."""
        return self.writer if self.runner.started_at is not None and not self.finished \
            else None

    def _store(self, write: Callable, *args, **kwargs) -> None:
        """Have the storing thread call ``write``, in arrival order."""
        self._queue.put(functools.partial(write, *args, **kwargs))

    def _on_frame(self, msg) -> None:
        arrival = self._now()
        max_rate = self.params['max_frame_rate_hz']
        if self._heard['camera'] and max_rate > 0 \
                and arrival - self._last_frame_kept < 0.9 / max_rate:
            return  # thinned before any conversion
        try:
            if isinstance(msg, Image):
                image = image_msg_to_bgr(msg)
            else:
                compressed_msg_to_bgr(msg)  # refuse broken data before storing it
        except ImageFormatError as error:
            self.get_logger().warning(f'camera frame not recorded: {error}',
                                      throttle_duration_sec=5.0)
            return
        self._heard['camera'] = True
        writer = self._recording()
        if writer is None:
            return
        if not self._frame_slots.acquire(blocking=False):
            self.get_logger().warning(f'camera frame not recorded: {MAX_QUEUED_FRAMES} frames '
                                      'still wait for the disk', throttle_duration_sec=5.0)
            return
        self._last_frame_kept = arrival
        stamp = stamp_to_sec(msg.header.stamp) or arrival
        frame_id = msg.header.frame_id or 'camera'
        if isinstance(msg, Image):
            self._store(self._write_frame, writer.add_frame, arrival, image, stamp_s=stamp,
                        frame_id=frame_id)
        else:
            self._store(self._write_frame, writer.add_compressed, arrival, msg.format,
                        msg.data, stamp_s=stamp, frame_id=frame_id)

    def _on_info(self, msg) -> None:
        try:
            fmt = StreamFormat.from_fields(msg.sample_rate, msg.channels, msg.sample_format,
                                           msg.coding_format)
        except AudioFormatError as error:
            self.get_logger().error(f'AudioInfo describes audio that cannot be recorded: '
                                    f'{error}', throttle_duration_sec=10.0)
            return
        if fmt != self._format:
            self.get_logger().info(f'audio format from AudioInfo: {fmt.describe()}')
            self._format = fmt
            self._stamper.reset()

    def _on_audio_stamped(self, msg) -> None:
        self._record_audio(msg.audio.data, msg.header.stamp, msg.header.frame_id)

    def _on_audio_plain(self, msg) -> None:
        self._record_audio(msg.data, None, '')

    def _record_audio(self, data, stamp, frame_id: str) -> None:
        arrival = self._now()
        fmt = self._format
        raw = bytes(data)
        try:
            samples, clipped = pcm_to_float(raw, fmt)
        except AudioFormatError as error:
            self.get_logger().warning(f'audio chunk not recorded: {error}',
                                      throttle_duration_sec=5.0)
            return
        if clipped:
            self.get_logger().warning(f'{clipped} samples at digital full scale: the '
                                      'microphone gain is too high', throttle_duration_sec=5.0)
        self._heard['audio'] = True
        duration = samples.shape[0] / fmt.sample_rate
        first_sample = (stamp_to_sec(stamp) if stamp is not None and stamp_to_sec(stamp) > 0
                        else self._stamper.stamp(arrival, duration))
        writer = self._recording()
        if writer is None:
            return
        self._store(writer.set_audio_format, arrival, fmt.sample_rate, fmt.channels)
        self._store(writer.add_audio, arrival, raw if fmt.sample_format == 'S16LE' else samples,
                    stamp_s=first_sample, frame_id=frame_id or 'microphone')

    # ----------------------------------------------------------------- schedule
    def _tick(self) -> None:
        if self.finished:
            return
        now = self._now()
        if self.runner.started_at is None:
            if not all(self._heard.values()):
                return
            self.runner.start(now)
            self.get_logger().info(f'inputs heard ({self._inputs_text()}): recording starts')
        step = self.runner.update(now)
        if step is not None:
            self._say(step.text)
        if self.runner.done:
            self.stop(interrupted=False)

    def _say(self, text: str) -> None:
        self.get_logger().info(f'prompt: {text}')
        if self.context.ok():  # not after an external shutdown
            self._prompts.publish(String(data=text))

    def stop(self, interrupted: bool) -> None:
        """End the recording: label what was prompted, finish (or drop) the session.

        Returns once the storing thread has finished the session; a later call (the exit's,
        after the schedule's own end) changes nothing.
        """
        if self._stopped is None:
            self._stopped = (self._now(), interrupted)
            if self.writer is None:
                self._say(f'{"Stopped" if interrupted else "Done"}. Nothing was stored '
                          '(output_dir is empty).')
        self.finished = True
        if self.writer is not None:
            self._queue.put(None)  # after every message queued so far
            self._storing.join()

    # ------------------------------------------------------------------ storing
    def _store_queued(self) -> None:
        """The storing thread: writes the queued messages in order, then the session's end."""
        while True:
            write = self._queue.get()
            if write is None:
                break
            try:
                write()
            except Exception as error:  # noqa: BLE001 - one message lost, the session kept
                self.get_logger().error(f'message not recorded: {error}',
                                        throttle_duration_sec=5.0)
        self._finish()

    def _write_frame(self, write: Callable, *args, **kwargs) -> None:
        try:
            write(*args, **kwargs)
        finally:
            self._frame_slots.release()

    def _finish(self) -> None:
        """Labels, then the session made final (the storing thread's last task)."""
        stop_time, interrupted = self._stopped
        started = self.runner.started_at
        elapsed = stop_time - started if started is not None else 0.0
        intervals = self.runner.intervals(stop_time)
        ended = 'Stopped' if interrupted else 'Done'
        for interval in intervals:
            self.writer.add_label(interval.start, interval.end, interval.label)
        notes = (f'stopped after {elapsed:.1f} of {self.schedule.total_s:.1f} s, '
                 f'{len(intervals)} of {len(self.schedule.prompts)} emotions labelled'
                 if interrupted else '')
        try:
            self.session_dir = self.writer.finish(partial=interrupted, notes=notes)
        except SessionError as error:  # nothing labelled, or the id was taken meanwhile
            self.get_logger().warning(f'session not stored: {error}')
            return
        w = self.writer
        summary = (f'{w.frames} frames, {w.audio_s:.1f} s audio, {len(intervals)} labelled '
                   f'intervals')
        self._say(f'{ended}. Thank you! Session saved: {self.session_dir.name}.')
        if interrupted:
            self.get_logger().warning(f'stopped early: partial session {self.session_dir} '
                                      f'({summary}; marked partial in session.yaml)')
        else:
            self.get_logger().info(f'session {self.session_dir} ({summary})')


def main(args: Optional[List[str]] = None) -> int:
    """Spin until the schedule is done; Ctrl-C or SIGTERM finish a partial session.

    Signals are handled by run_node, not by rclpy (which would shut ROS down first): the
    partial session's last prompt and log lines still reach their topics.
    """
    return run_node(RecorderNode, args, finished=lambda node: node.finished,
                    on_exit=lambda node: node.stop(interrupted=True),  # no-op once ended
                    ros_signal_handlers=False)


if __name__ == '__main__':
    sys.exit(main())
