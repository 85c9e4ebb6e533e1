"""In-process rclpy test of fusion_node: messages in, debounced and latched state out."""
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from mika_common.emotions import EMOTION_LABELS
from mika_common.ros_io import latched_qos, results_qos
from mika_common.testing import spin_until
from mika_fusion.fusion_node import FusionNode
from mika_msgs.msg import EmotionResult, FusedEmotion


@pytest.fixture
def graph():
    rclpy.init()
    fusion = FusionNode()
    probe = rclpy.create_node('fusion_probe')
    executor = SingleThreadedExecutor()
    executor.add_node(fusion)
    executor.add_node(probe)
    yield fusion, probe, executor
    executor.shutdown()
    fusion.destroy_node()
    probe.destroy_node()
    rclpy.shutdown()


def result(probe, label, modality=EmotionResult.MODALITY_FACE, confidence=0.85, age_s=0.0):
    probabilities = [(1.0 - confidence) / 6] * 7
    probabilities[EMOTION_LABELS.index(label)] = confidence
    msg = EmotionResult(modality=modality, label_names=list(EMOTION_LABELS),
                        probabilities=probabilities, label=label, confidence=confidence,
                        track_id=2 if modality == 'face' else -1)
    now = probe.get_clock().now().nanoseconds - int(age_s * 1e9)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
    return msg


def test_results_become_a_latched_state_and_bad_results_are_counted(graph):
    fusion, probe, executor = graph
    face = probe.create_publisher(EmotionResult, 'emotion/face', results_qos())
    voice = probe.create_publisher(EmotionResult, 'emotion/voice', results_qos())
    assert spin_until(executor, lambda: face.get_subscription_count() > 0, 5.0)
    for _ in range(5):
        face.publish(result(probe, 'happy'))
        voice.publish(result(probe, 'happy', modality='voice', confidence=0.6))
        spin_until(executor, lambda: False, 0.05)

    broken = result(probe, 'sad')
    broken.probabilities = broken.probabilities[:6]  # arrays of different lengths
    face.publish(broken)
    future = result(probe, 'sad', age_s=-5.0)
    face.publish(future)
    nan = result(probe, 'sad')
    nan.probabilities[0] = float('nan')
    voice.publish(nan)
    assert spin_until(executor, lambda: sum(fusion.diagnostics.rejected.values()) == 3, 3.0)
    assert fusion.diagnostics.rejected == {
        'length_mismatch': 1, 'future_stamp': 1, 'not_finite': 1}

    late = []
    probe.create_subscription(FusedEmotion, 'emotion/fused', late.append, latched_qos())
    assert spin_until(executor, lambda: bool(late), 3.0)
    state = late[-1]
    assert state.emotion == 'happy' and state.attitude == 'positive'
    assert sorted(c.modality for c in state.contributions) == ['face', 'voice']
    assert list(state.label_names) == list(EMOTION_LABELS)


def test_runtime_parameter_changes_are_validated_and_applied(graph):
    fusion, probe, executor = graph
    refused = fusion.set_parameters([Parameter('face_selection', value='track_id')])[0]
    assert not refused.successful and 'target_track_id' in refused.reason
    accepted = fusion.set_parameters([Parameter('target_track_id', value=4),
                                      Parameter('face_selection', value='track_id')])
    assert all(r.successful for r in accepted)
    assert fusion.fuser.config.face_selection == 'track_id'
    assert fusion.fuser.config.target_track_id == 4
    assert not fusion.set_parameters([Parameter('half_life_s', value=-1.0)])[0].successful
