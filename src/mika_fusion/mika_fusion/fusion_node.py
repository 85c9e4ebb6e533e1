"""fusion_node: emotion/face + emotion/voice -> debounced emotion/fused.

Thin: converts messages, holds parameters, calls :mod:`mika_fusion.fusion`. The state is
computed for the node clock's ``now`` (so ``use_sim_time`` works with replayed bags), and
published on every change and at ``publish_rate_hz``, transient-local so that a behaviour
node started late gets the current state at once. Its parameters are ROS-free, in
:mod:`mika_fusion.fusion_parameters`.

Throughput: a result costs rclpy far more (a wait-set round, the message conversion) than
the fusion (0.03 ms), so the node spins one thread. With rclpy's MultiThreadedExecutor,
which hands every message to a thread pool, it used about 1 ms of CPU per result and took
in 24-63% of a 1000-2000 results/s flood; with one thread 0.4 ms, and 88-100%
(``fusion_benchmark --flood``, bench/results/fusion.md).
"""
from __future__ import annotations

import time

from rclpy.node import Node

from mika_common.diagnostics import NodeDiagnostics
from mika_common.echo import echo
from mika_common.emotions import EMOTION_LABELS
from mika_common.node_params import ParameterSet
from mika_common.ros_io import (
    InputWatchdog, latched_qos, results_qos, run_node, sec_to_stamp, stamp_to_sec)
from mika_fusion.fusion import (
    FACE, VOICE, EmotionFuser, FusedState, InvalidInput, make_observation)
from mika_fusion.fusion_parameters import PARAMETERS, fusion_config  # PARAMETERS: config tests
from mika_msgs.msg import EmotionResult, FusedEmotion, ModalityContribution

#: Results kept per input topic while the node is busy: 0.1 s of a 1000 results/s flood,
#: so a pause of the process (another one on the core) loses none.
INPUT_DEPTH = 100


class FusionNode(Node):
    """Feeds every valid result to :class:`EmotionFuser` and publishes its state."""

    def __init__(self, **node_options):
        super().__init__('fusion_node', **node_options)
        self.params = ParameterSet(self, PARAMETERS, on_change=self._reconfigure)
        self.fuser = EmotionFuser(fusion_config(self.params.values))
        self.diagnostics = NodeDiagnostics(self, 'fusion', latency_warn_s=0.005)
        self._publisher = self.create_publisher(FusedEmotion, 'emotion/fused', latched_qos())
        watchdog = InputWatchdog(self)
        for modality in (FACE, VOICE):
            watchdog.subscribe(EmotionResult, f'emotion/{modality}',
                               lambda msg, expected=modality: self._on_result(msg, expected),
                               results_qos(INPUT_DEPTH))
        self.create_timer(1.0 / self.params['publish_rate_hz'], self._publish_state)
        self.diagnostics.set_state('ok', 'running')
        self.get_logger().info('fusing emotion/face and emotion/voice into emotion/fused')

    def _reconfigure(self, changed) -> None:
        # FusionConfig raises ValueError for an inconsistent combination: the change is refused
        self.fuser.reconfigure(fusion_config({**self.params.values, **changed}))

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_result(self, msg: EmotionResult, expected_modality: str) -> None:
        self.diagnostics.count(f'{expected_modality} received')
        now = self._now()
        try:
            if msg.modality != expected_modality:
                raise InvalidInput('wrong_modality', f'modality {echo(msg.modality)} on the '
                                   f'{expected_modality} topic (miswired remapping?)')
            observation = make_observation(
                msg.modality, stamp_to_sec(msg.header.stamp), msg.label_names,
                msg.probabilities, msg.confidence, now, self.fuser.config,
                track_id=msg.track_id, area=float(msg.face_roi.width * msg.face_roi.height),
                utterance_start=stamp_to_sec(msg.utterance_start),
                utterance_end=stamp_to_sec(msg.utterance_end))
        except InvalidInput as error:
            self.diagnostics.reject(error.reason)
            self.get_logger().warning(
                f'rejected a result on emotion/{expected_modality}: {error}',
                throttle_duration_sec=5.0)
            return
        if not self.fuser.add(observation):
            self.diagnostics.count('older than the kept result')
        state = self._update(now)
        if state.changed:
            self._publish(state)

    def _update(self, now: float) -> FusedState:
        jumps = self.fuser.backward_jumps
        start = time.perf_counter()
        state = self.fuser.update(now)
        self.diagnostics.observe_latency(time.perf_counter() - start)
        if self.fuser.backward_jumps != jumps:
            self.get_logger().warning('the clock went back (a replayed bag restarted?): '
                                      'the fusion state was reset')
        return state

    def _publish_state(self) -> None:
        self._publish(self._update(self._now()))

    def _publish(self, state: FusedState) -> None:
        self._publisher.publish(self._to_msg(state))
        self.diagnostics.count('published')
        if state.changed:
            self.diagnostics.count('changes')

    @staticmethod
    def _to_msg(state: FusedState) -> FusedEmotion:
        msg = FusedEmotion(emotion=state.emotion, confidence=state.confidence,
                           attitude=state.attitude, valence=state.valence,
                           arousal=state.arousal, since=sec_to_stamp(state.since))
        msg.header.stamp = sec_to_stamp(state.stamp)
        if state.probabilities is not None:
            msg.label_names = list(EMOTION_LABELS)
            msg.probabilities = [float(p) for p in state.probabilities]
        msg.contributions = [
            ModalityContribution(modality=c.modality, label=c.label, confidence=c.confidence,
                                 age=c.age, weight=c.weight, track_id=c.track_id)
            for c in state.contributions]
        return msg


def main(args=None) -> int:
    return run_node(FusionNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
