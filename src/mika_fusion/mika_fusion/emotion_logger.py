"""emotion_logger: an example behaviour node consuming emotion/fused.

Copy it as the start of your own. Two things matter when consuming the state:
subscribe with transient-local durability (``latched_qos``) so that you get the current
state at once even if you start late, and react to *changes* of ``emotion`` (the fusion
node already debounced them) rather than to every message (it is re-published at a
fixed rate).

    ros2 run mika_fusion emotion_logger                          # a log line per change
    ros2 run mika_fusion emotion_logger --ros-args -p stdout:=true   # also plain stdout lines
"""
from __future__ import annotations

from rclpy.node import Node

from mika_common.node_params import ParameterSet
from mika_common.ros_io import latched_qos, run_node, stamp_to_sec
from mika_fusion.fusion_parameters import EMOTION_LOGGER_PARAMETERS as PARAMETERS
from mika_msgs.msg import FusedEmotion


class EmotionLogger(Node):
    """Logs one line per change of the fused emotion."""

    def __init__(self, **node_options):
        super().__init__('emotion_logger', **node_options)
        self.params = ParameterSet(self, PARAMETERS)
        self._last_emotion = None
        self.create_subscription(FusedEmotion, 'emotion/fused', self._on_state, latched_qos())

    def _on_state(self, state: FusedEmotion) -> None:
        if state.emotion == self._last_emotion:
            return
        self._last_emotion = state.emotion
        line = describe(state)
        self.get_logger().info(line)
        if self.params['stdout']:
            print(f'{stamp_to_sec(state.header.stamp):.2f} {line}', flush=True)


def describe(state: FusedEmotion) -> str:
    """One line: emotion, confidence, attitude, valence/arousal, how long it has held, and
    which modalities it rests on."""
    held = stamp_to_sec(state.header.stamp) - stamp_to_sec(state.since)
    sources = ', '.join(f'{c.modality}: {c.label} {c.confidence:.2f} '
                        f'(age {c.age:.1f} s, weight {c.weight:.0%})'
                        for c in state.contributions) or 'no fresh input'
    return (f'{state.emotion} ({state.confidence:.2f}), {state.attitude}, valence '
            f'{state.valence:+.2f}, arousal {state.arousal:+.2f}, held for {held:.1f} s '
            f'| {sources}')


def main(args=None) -> int:
    return run_node(EmotionLogger, args)


if __name__ == '__main__':
    raise SystemExit(main())
