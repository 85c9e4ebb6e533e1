"""The README's first command: the whole graph on a sample camera and microphone.

Starts the nodes as processes (as the launch file would, with config/perception.yaml),
plays the sample (a real face and real speech, see :mod:`mika_bringup.sample_media`),
prints the fused emotion stream as it arrives, then stops everything and prints a summary.
Exits non-zero when a stage produced nothing, so it doubles as a smoke test.
"""
from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import time
from typing import List, Optional

import rclpy
from rclpy.executors import SingleThreadedExecutor

from mika_bringup.run_graph import GraphProcesses
from mika_bringup.sample_player import SamplePlayer
from mika_common.process_signals import (
    begin_stopping, ignore_interrupts, interrupt_on_stop_signals)
from mika_common.ros_io import latched_qos, results_qos, stamp_to_sec
from mika_fusion.emotion_logger import describe
from mika_msgs.msg import EmotionResult, FusedEmotion

WARM_UP_TIMEOUT_S = 180.0
SENSOR_TOPICS = ('/camera/image_raw', '/audio_stamped')
PRINT_EVERY_S = 2.0


class Observer:
    """Subscribes to the three emotion topics and prints the fused stream."""

    def __init__(self, node):
        self.face: List[EmotionResult] = []
        self.voice: List[EmotionResult] = []
        self.fused: List[FusedEmotion] = []
        self._start = time.monotonic()
        self._printed = 0.0
        node.create_subscription(EmotionResult, 'emotion/face', self.face.append, results_qos())
        node.create_subscription(EmotionResult, 'emotion/voice', self._on_voice, results_qos())
        node.create_subscription(FusedEmotion, 'emotion/fused', self._on_fused, latched_qos())

    def _on_voice(self, msg: EmotionResult) -> None:
        self.voice.append(msg)
        span = stamp_to_sec(msg.utterance_end) - stamp_to_sec(msg.utterance_start)
        print(f'[{time.monotonic() - self._start:5.1f} s] voice: {msg.label} '
              f'({msg.confidence:.2f}) for a {span:.1f} s utterance', flush=True)

    def _on_fused(self, msg: FusedEmotion) -> None:
        """Print every change at once, and the current state every PRINT_EVERY_S."""
        previous = self.fused[-1].emotion if self.fused else None
        self.fused.append(msg)
        now = time.monotonic()
        if msg.emotion != previous or now - self._printed >= PRINT_EVERY_S:
            self._printed = now
            marker = '*' if msg.emotion != previous else ' '
            print(f'[{now - self._start:5.1f} s]{marker}fused: {describe(msg)}', flush=True)

    def summary(self) -> str:
        faces = collections.Counter(m.label for m in self.face)
        voices = collections.Counter(m.label for m in self.voice)
        states = collections.Counter(m.emotion for m in self.fused)
        return (f'face results: {len(self.face)} {dict(faces)}\n'
                f'voice results: {len(self.voice)} {dict(voices)}\n'
                f'fused states: {len(self.fused)} {dict(states)}')


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--duration', type=float, default=14.0, help='sample length in seconds')
    parser.add_argument('--params-file', default='', help='parameters (default: installed '
                        'config/perception.yaml)')
    options = parser.parse_args(argv)
    interrupt_on_stop_signals()  # the nodes are stopped, not orphaned, on Ctrl-C or SIGTERM
    # A domain of its own, so the demo neither hears nor disturbs other ROS 2 graphs.
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(10, 99)))
    print(f'[demo] ROS_DOMAIN_ID={os.environ["ROS_DOMAIN_ID"]}', flush=True)

    graph = GraphProcesses({'params_file': options.params_file, 'respawn': 'false'})
    graph.start()
    rclpy.init()
    executor = SingleThreadedExecutor()
    probe = rclpy.create_node('mika_demo')
    observer = Observer(probe)
    executor.add_node(probe)
    player = None
    try:
        print('[demo] waiting for the nodes to load their models ...', flush=True)
        # A node subscribes to its sensor once its model is loaded: wait for those subscribers.
        deadline = time.monotonic() + WARM_UP_TIMEOUT_S
        while time.monotonic() < deadline and not all(
                probe.count_subscribers(topic) for topic in SENSOR_TOPICS):
            executor.spin_once(timeout_sec=0.2)
            graph.poll()
        time.sleep(1.0)  # let discovery settle both ways
        player = SamplePlayer()
        executor.add_node(player)
        while not player.finished:
            executor.spin_once(timeout_sec=0.05)
        end = time.monotonic() + 3.0  # the last utterance and fused update
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        begin_stopping()  # a Ctrl-C now would leave the nodes half-stopped
        codes = graph.stop()
        if player is not None:
            player.destroy_node()
        probe.destroy_node()
        rclpy.try_shutdown()
        ignore_interrupts()
    print('[demo] summary\n' + observer.summary(), flush=True)
    known = [m for m in observer.fused if m.emotion != FusedEmotion.UNKNOWN]
    problems = [name for name, items in (('face', observer.face), ('voice', observer.voice),
                                         ('fused', known)) if not items]
    if problems:
        print(f'[demo] FAILED: nothing from {", ".join(problems)}; node exit codes {codes}',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
