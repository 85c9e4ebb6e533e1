"""In-process rclpy test of fusion_node: messages in, debounced and latched state out."""
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from mika_common.emotions import EMOTION_LABELS
from mika_common.ros_io import latched_qos, results_qos, sec_to_stamp
from mika_common.testing import spin_until
from mika_fusion.emotion_logger import EmotionLogger
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
    now = probe.get_clock().now().nanoseconds * 1e-9 - age_s
    msg.header.stamp = sec_to_stamp(now)
    if modality == EmotionResult.MODALITY_VOICE:  # a 2 s utterance that just ended
        msg.header.stamp = msg.utterance_start = sec_to_stamp(now - 2.0)
        msg.utterance_end = sec_to_stamp(now)
    else:
        msg.face_roi.width = msg.face_roi.height = 100
    return msg


def test_results_become_a_debounced_latched_state_and_bad_results_are_counted(graph):
    fusion, probe, executor = graph
    face = probe.create_publisher(EmotionResult, 'emotion/face', results_qos())
    voice = probe.create_publisher(EmotionResult, 'emotion/voice', results_qos())
    states = []
    probe.create_subscription(FusedEmotion, 'emotion/fused', states.append, latched_qos())
    assert spin_until(executor, lambda: face.get_subscription_count() > 0
                      and voice.get_subscription_count() > 0, 5.0)
    for _ in range(5):
        face.publish(result(probe, 'happy'))
        voice.publish(result(probe, 'happy', modality='voice', confidence=0.6))
        spin_until(executor, lambda: False, 0.05)
    assert spin_until(executor, lambda: states and states[-1].emotion == 'happy', 3.0)
    del states[:-1]  # before the first result the timer may have published 'unknown'

    broken = result(probe, 'sad')
    broken.probabilities = broken.probabilities[:6]  # arrays of different lengths
    face.publish(broken)
    face.publish(result(probe, 'sad', age_s=-5.0))  # from the future
    nan = result(probe, 'sad', modality='voice')
    nan.probabilities[0] = float('nan')
    voice.publish(nan)
    voice.publish(result(probe, 'sad'))  # a face result on the voice topic
    assert spin_until(executor, lambda: sum(fusion.diagnostics.rejected.values()) == 4, 3.0)
    assert fusion.diagnostics.rejected == {
        'length_mismatch': 1, 'future_stamp': 1, 'not_finite': 1, 'wrong_modality': 1}

    face.publish(result(probe, 'sad'))  # one misread frame among happy ones: debounced away
    for _ in range(6):
        spin_until(executor, lambda: False, 0.05)
        face.publish(result(probe, 'happy'))
    spin_until(executor, lambda: False, 0.1)
    assert {s.emotion for s in states} == {'happy'}
    state = states[-1]
    assert state.attitude == 'positive' and list(state.label_names) == list(EMOTION_LABELS)
    assert sorted(c.modality for c in state.contributions) == ['face', 'voice']
    voice_age = next(c.age for c in state.contributions if c.modality == 'voice')
    assert voice_age < 1.5  # counted from the utterance's end, not its start 2 s earlier

    late = []  # a behaviour node started late gets the current state at once
    probe.create_subscription(FusedEmotion, 'emotion/fused', late.append, latched_qos())
    assert spin_until(executor, lambda: bool(late), 3.0)
    assert late[0].emotion == 'happy'

    def person_turns_sad():  # the node survived the bad input and follows a real change
        face.publish(result(probe, 'sad'))
        voice.publish(result(probe, 'sad', modality='voice'))
        return states[-1].emotion == 'sad'
    assert spin_until(executor, person_turns_sad, 5.0)
    emotions = [s.emotion for s in states]
    assert sum(1 for a, b in zip(emotions, emotions[1:]) if a != b) == 1, emotions


class LogRecorder:
    """Stands in for the node's logger: keeps every line."""

    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        return lambda message, **throttle: self.lines.append((level, message))


def test_echoed_modality_and_labels_are_cut_short_in_the_log(graph):
    """A 1 MB modality or label name costs a short log line, not a 1 MB one."""
    fusion, probe, executor = graph
    log = LogRecorder()
    fusion.get_logger = lambda: log
    face = probe.create_publisher(EmotionResult, 'emotion/face', results_qos())
    assert spin_until(executor, lambda: face.get_subscription_count() > 0, 5.0)
    huge = 'x' * 1_000_000
    wrong_modality = result(probe, 'sad')
    wrong_modality.modality = huge
    unknown_labels = result(probe, 'sad')
    unknown_labels.label_names = [huge] * 6 + ['sad']
    face.publish(wrong_modality)
    face.publish(unknown_labels)
    assert spin_until(executor, lambda: sum(fusion.diagnostics.rejected.values()) == 2, 5.0)
    assert fusion.diagnostics.rejected == {'wrong_modality': 1, 'unknown_labels': 1}
    warnings = [message for level, message in log.lines if level == 'warning']
    assert len(warnings) == 2 and all(len(message) < 400 for message in warnings), warnings


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
    assert fusion.set_parameters([Parameter('min_dwell_s', value=2)])[0].successful
    assert fusion.fuser.config.min_dwell_s == 2.0


def test_the_example_logger_prints_each_change_once(graph, capsys):
    fusion, probe, executor = graph
    logger = EmotionLogger(parameter_overrides=[Parameter('stdout', value=True)])
    executor.add_node(logger)
    try:
        face = probe.create_publisher(EmotionResult, 'emotion/face', results_qos())
        assert spin_until(executor, lambda: face.get_subscription_count() > 0, 5.0)

        def surprised():
            face.publish(result(probe, 'surprise'))
            return 'surprise' in capsys.readouterr().out
        assert spin_until(executor, surprised, 5.0)
        spin_until(executor, lambda: False, 0.5)  # re-published states: not printed again
        printed = capsys.readouterr().out
        assert 'surprise' not in printed, printed
    finally:
        executor.remove_node(logger)
        logger.destroy_node()
