"""evaluator_node: scores emotion/fused, emotion/face and emotion/voice live, against the
ground truth of the bag being played, and writes the report offline evaluation writes.

Thin: it hands every message, with its clock at receipt, to
:class:`mika_evaluation.live.LiveRecording`. Run it, the graph and the player on one clock:

    run_graph use_sim_time:=true &          # or: ros2 launch mika_bringup ... use_sim_time:=true
    evaluator_node --ros-args -p use_sim_time:=true -p output_dir:=/tmp/live \\
        -p params_file:=config/perception.yaml -p bag:=/tmp/eval_private &
    play_bag /tmp/eval_private --clock --wait-for-subscribers 30   # or: ros2 bag play --clock

The report is written when nothing from the bag arrived for ``end_after_idle_s`` (then the
node exits; fused states do not count: the fusion node publishes them while the bag has not
started, and on the system clock after it ended), on the ``~/write_report`` service
(std_srvs/Trigger; the node goes on recording) and on shutdown (Ctrl-C) if something arrived
since the last report.
"""
from __future__ import annotations

import time
from typing import List, Optional

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock as ClockMessage
from std_msgs.msg import String

from mika_common.node_params import ParameterSet
from mika_common.ros_io import (
    InputWatchdog, latched_qos, results_qos, run_node, stamp_to_sec)
from mika_evaluation.bag_format import BagError
from mika_evaluation.live import PARAMETERS, LiveRecording, LiveSettings, summary_line
from mika_msgs.msg import EmotionResult, FusedEmotion

try:
    from std_srvs.srv import Trigger
except ImportError:  # said at start; the report is still written on idle and shutdown
    Trigger = None

FUSED_TOPIC = 'emotion/fused'
TRUTH_TOPIC = 'emotion/ground_truth'


class EvaluatorNode(Node):
    """Records the graph's outputs and the truth; writes the report when asked or idle."""

    def __init__(self, **node_options):
        super().__init__('evaluator_node', **node_options)
        self.params = ParameterSet(self, PARAMETERS)
        self.settings = LiveSettings.from_values(self.params.values)
        self.recording = LiveRecording(self.settings)
        self.finished = False
        self.exit_code = 0
        self._last_input = None  # monotonic time of the newest message
        self._last_bag_input = None  # ... of the newest one only a playing bag produces
        self._reported_at = None  # monotonic time of the newest message in the last report
        watchdog = InputWatchdog(self)
        # depth: states published on a change and on the timer may arrive together
        watchdog.subscribe(FusedEmotion, FUSED_TOPIC, self._on_fused, latched_qos(depth=20))
        for modality in ('face', 'voice'):
            watchdog.subscribe(EmotionResult, f'emotion/{modality}',
                               lambda msg, m=modality: self._on_result(msg, m), results_qos())
        if self.settings.labels_file is None:
            watchdog.subscribe(String, TRUTH_TOPIC, self._on_truth, results_qos())
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.sim_time = self.get_parameter('use_sim_time').value
        if self.sim_time:
            self.create_subscription(ClockMessage, '/clock', self._on_clock, QoSProfile(
                depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))  # as the players offer
        self.create_timer(0.5, self._check_idle, clock=Clock(clock_type=ClockType.STEADY_TIME))
        if Trigger is not None:
            self.create_service(Trigger, '~/write_report', self._on_write_report)
        else:
            self.get_logger().warning('std_srvs is not installed: no ~/write_report service '
                                      '(pip install ros-std-srvs, or apt ros-$ROS_DISTRO-std-srvs);'
                                      ' the report is written when idle and on shutdown')
        truth = (f'file {self.settings.labels_file}' if self.settings.labels_file
                 else f'topic {TRUTH_TOPIC}')
        idle = self.params['end_after_idle_s']
        self.get_logger().info(
            f'recording {FUSED_TOPIC}, emotion/face, emotion/voice; truth from {truth}; '
            f'{"bag clock (/clock)" if self.sim_time else "system clock (no use_sim_time)"}; '
            f'report to {self.settings.output_dir} '
            + (f'after {idle:g} s without input, ' if idle else '')
            + 'on ~/write_report and on shutdown')

    # ------------------------------------------------------------------ inputs
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _received(self, from_bag: bool = True) -> float:
        self._last_input = time.monotonic()
        if from_bag:
            self._last_bag_input = self._last_input
        return self._last_input

    def _on_clock(self, msg) -> None:
        if self.recording.clock(stamp_to_sec(msg.clock)):
            self.get_logger().warning('the clock went back (the bag was played again?): the '
                                      'recording restarted; the report covers this replay')
        self._received()

    def _on_fused(self, msg: FusedEmotion) -> None:
        self.recording.add_fused(FUSED_TOPIC, stamp_to_sec(msg.header.stamp), msg.emotion,
                                 self._received(from_bag=False))

    def _on_result(self, msg: EmotionResult, modality: str) -> None:
        wall = self._received()
        if msg.modality != modality:
            self.recording.counters[f'{modality} rejected: wrong_modality'] += 1
            self.get_logger().warning(f'a {msg.modality!r} result on emotion/{modality} '
                                      '(miswired remapping?): not scored',
                                      throttle_duration_sec=10.0)
            return
        problem = self.recording.add_result(
            f'emotion/{modality}', modality, self._now(), wall, stamp_to_sec(msg.header.stamp),
            msg.label_names, msg.probabilities, msg.confidence, msg.track_id,
            float(msg.face_roi.width * msg.face_roi.height), stamp_to_sec(msg.utterance_start),
            stamp_to_sec(msg.utterance_end), msg.model_id)
        if problem is not None:
            self.get_logger().warning(problem, throttle_duration_sec=10.0)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            self.recording.add_diagnostics(status.name, {v.key: v.value for v in status.values})

    def _on_truth(self, msg) -> None:
        reason = self.recording.add_truth(TRUTH_TOPIC, self._now(), msg.data, self._received())
        if reason is not None:
            self.get_logger().warning(f'ground truth ignored: {reason}',
                                      throttle_duration_sec=10.0)

    # ------------------------------------------------------------------ the report
    def write_report(self) -> Optional[str]:
        """Write the report now; its summary line, or None (the reason is logged)."""
        self._reported_at = self._last_input
        try:
            report = self.recording.write_report()
        except (BagError, OSError) as error:
            self.get_logger().error(f'no report written: {error}')
            return None
        line = summary_line(report)
        self.get_logger().info(f'report written to {self.settings.output_dir}: {line}')
        return line

    def _check_idle(self) -> None:
        idle = self.params['end_after_idle_s']
        if (idle and self._last_bag_input is not None and self._reported_at != self._last_input
                and time.monotonic() - self._last_bag_input >= idle):
            self.get_logger().info(f'nothing from the bag for {idle:g} s: the bag ended')
            self.exit_code = 0 if self.write_report() else 1
            self.finished = True

    def _on_write_report(self, _request, response):
        line = self.write_report()
        response.success = line is not None
        response.message = (f'{self.settings.output_dir}: {line}' if line
                            else 'no report: see the node log for the reason')
        return response

    def on_shutdown(self) -> None:
        """Write what arrived since the last report (Ctrl-C ends a live evaluation)."""
        if self._last_input is not None and self._reported_at != self._last_input:
            self.write_report()


def main(args: Optional[List[str]] = None) -> int:
    return run_node(EvaluatorNode, args, finished=lambda node: node.finished,
                    on_exit=EvaluatorNode.on_shutdown, exit_code=lambda node: node.exit_code)


if __name__ == '__main__':
    raise SystemExit(main())
