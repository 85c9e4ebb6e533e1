"""Publishes a sample camera and microphone, as the drivers would, for demos and tests.

Frames go out as ``sensor_msgs/Image`` (bgr8) on ``camera/image_raw``; audio as the
``audio_capture`` driver publishes it: ``audio`` (AudioData), ``audio_stamped``
(AudioDataStamped) in 100 ms chunks of S16LE mono, and ``audio_info`` (AudioInfo,
transient-local). Stamps follow the node clock; each audio chunk is stamped with the time
of its first sample. With ``loop`` the sample starts again when it ends (soak tests).
"""
from __future__ import annotations

import sys
from typing import List, Optional

import numpy as np
import rclpy
from audio_common_msgs.msg import AudioData, AudioDataStamped, AudioInfo
from rclpy.node import Node
from sensor_msgs.msg import Image

from mika_bringup import sample_media
from mika_common.node_params import ParameterSet, ParamSpec
from mika_common.ros_io import latched_qos, sec_to_stamp, sensor_qos

SENTENCES = ('Hello there. I am really glad to see you again today.',
             'Could you tell me what happened this morning?')

PARAMETERS = [
    ParamSpec('duration_s', 14.0, 'Length of the sample in seconds; the node exits after it.',
              min_value=1.0, max_value=600.0, read_only=True),
    ParamSpec('fps', 15.0, 'Camera frame rate.', min_value=1.0, max_value=60.0, read_only=True),
    ParamSpec('width', 640, 'Frame width in pixels.', min_value=64, max_value=3840,
              read_only=True),
    ParamSpec('height', 480, 'Frame height in pixels.', min_value=48, max_value=2160,
              read_only=True),
    ParamSpec('speech', True, 'Publish the microphone too (needs espeak-ng).', read_only=True),
    ParamSpec('chunk_s', 0.1, 'Audio chunk length in seconds.', min_value=0.01,
              max_value=1.0, read_only=True),
    ParamSpec('loop', False, 'Play the sample again and again instead of exiting after it.',
              read_only=True),
]


def chunks_due(elapsed_s: float, samples_sent: int, chunk: int, sample_rate: int) -> int:
    """How many whole chunks of audio have been recorded ``elapsed_s`` after the start and
    not yet sent."""
    return max(0, (int(elapsed_s * sample_rate) - samples_sent) // chunk)


class SamplePlayer(Node):
    """Plays the sample once (or forever with ``loop``), then reports ``finished``."""

    def __init__(self, **kwargs):
        super().__init__('sample_player', **kwargs)
        self.params = ParameterSet(self, PARAMETERS)
        duration = self.params['duration_s']
        frame_count = int(duration * self.params['fps'])
        self._frames = self._sample_frames()
        self._audio: Optional[np.ndarray] = None
        if self.params['speech']:
            self._audio = sample_media.speech_track(SENTENCES, start_s=1.0, gap_s=1.5,
                                                    total_s=duration)
        self.frames_sent = 0
        self.chunks_sent = 0
        self._audio_position = 0
        self._samples_sent = 0
        self.finished = False
        self._start = self.get_clock().now().nanoseconds * 1e-9
        self._image_pub = self.create_publisher(Image, 'camera/image_raw', sensor_qos())
        self._frame_timer = self.create_timer(1.0 / self.params['fps'], self._publish_frame)
        if self._audio is not None:
            self._audio_pub = self.create_publisher(AudioData, 'audio', 10)
            self._stamped_pub = self.create_publisher(AudioDataStamped, 'audio_stamped', 10)
            info_pub = self.create_publisher(AudioInfo, 'audio_info', latched_qos())
            info_pub.publish(AudioInfo(channels=1, sample_rate=sample_media.SAMPLE_RATE,
                                       sample_format='S16LE', bitrate=0,
                                       coding_format='wave'))
            self._chunk = int(self.params['chunk_s'] * sample_media.SAMPLE_RATE)
            self._audio_timer = self.create_timer(self.params['chunk_s'], self._publish_audio)
        self.get_logger().info(
            f'playing {duration:.0f} s: {frame_count} frames'
            + (', speech' if self._audio is not None else '')
            + (', looped' if self.params['loop'] else ''))

    def _sample_frames(self):
        frame_count = int(self.params['duration_s'] * self.params['fps'])
        return sample_media.face_frames(frame_count, self.params['width'],
                                        self.params['height'])

    def _publish_frame(self) -> None:
        frame = next(self._frames, None)
        if frame is None and self.params['loop']:
            self._frames = self._sample_frames()
            frame = next(self._frames)
        if frame is None:
            self._frame_timer.cancel()
            self._check_finished()
            return
        msg = Image(height=frame.shape[0], width=frame.shape[1], encoding='bgr8',
                    is_bigendian=0, step=frame.shape[1] * 3, data=frame.tobytes())
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = 'sample_camera'
        self._image_pub.publish(msg)
        self.frames_sent += 1

    def _publish_audio(self) -> None:
        """Every chunk whose samples a microphone would have taken by now: a timer tick
        that came late or was skipped (a loaded machine) is made up with a burst, as a
        driver's buffer would, so the sample-count stamps stay on the clock."""
        elapsed = self.get_clock().now().nanoseconds * 1e-9 - self._start
        for _ in range(chunks_due(elapsed, self._samples_sent, self._chunk,
                                  sample_media.SAMPLE_RATE)):
            if not self._publish_chunk():
                return

    def _publish_chunk(self) -> bool:
        """Publish the next chunk; False once the (unlooped) sample has ended."""
        if self._audio_position >= self._audio.size and self.params['loop']:
            self._audio_position = 0
        if self._audio_position >= self._audio.size:
            self._audio_timer.cancel()
            self._check_finished()
            return False
        samples = self._audio[self._audio_position:self._audio_position + self._chunk]
        data = sample_media.to_s16le(samples)
        stamped = AudioDataStamped()
        stamped.header.stamp = sec_to_stamp(
            self._start + self._samples_sent / sample_media.SAMPLE_RATE)
        stamped.header.frame_id = 'sample_microphone'
        stamped.audio.data = data
        self._stamped_pub.publish(stamped)
        self._audio_pub.publish(AudioData(data=data))
        self.chunks_sent += 1
        self._audio_position += samples.size
        self._samples_sent += samples.size
        return True

    def _check_finished(self) -> None:
        audio_done = self._audio is None or self._audio_timer.is_canceled()
        if self._frame_timer.is_canceled() and audio_done and not self.finished:
            self.finished = True
            self.get_logger().info(
                f'sample finished: {self.frames_sent} frames, {self.chunks_sent} audio chunks')


def main(args: Optional[List[str]] = None) -> int:
    rclpy.init(args=args if args is not None else sys.argv)
    player = None
    try:
        player = SamplePlayer()
        while rclpy.ok() and not player.finished:
            rclpy.spin_once(player, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, ValueError) as error:
        print(f'[FATAL] {error}', file=sys.stderr)
        return 1
    finally:
        if player is not None:
            player.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
