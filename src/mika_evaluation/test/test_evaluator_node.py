"""The evaluator node as a process: what it hears from this test process over DDS is
scored against a label file, the report is written on the service call and again on
Ctrl-C, a silent input is named, and bad parameters stop it with the reason."""
import json
import sys
import time

import pytest

pytest.importorskip('rclpy')

from mika_common.emotions import EMOTION_LABELS  # noqa: E402
from mika_common.ros_io import latched_qos, results_qos, sec_to_stamp  # noqa: E402
from mika_common.testing import NodeProcess, probe_node, spin_until  # noqa: E402
from mika_msgs.msg import EmotionResult, FusedEmotion  # noqa: E402


@pytest.fixture
def ros_node():
    with probe_node('evaluator_test_probe') as probe:
        yield probe


def evaluator(*parameters):
    command = [sys.executable, '-m', 'mika_evaluation.evaluator_node', '--ros-args']
    for parameter in parameters:
        command += ['-p', parameter]
    return NodeProcess(command)


def matched_publishers(node, executor, process):
    """The fused and face publishers, once the evaluator process has matched both."""
    fused_pub = node.create_publisher(FusedEmotion, 'emotion/fused', latched_qos())
    face_pub = node.create_publisher(EmotionResult, 'emotion/face', results_qos())
    assert spin_until(executor, lambda: face_pub.get_subscription_count() > 0
                      and fused_pub.get_subscription_count() > 0, 20.0), process.output()
    spin_until(executor, lambda: False, 1.0)  # the evaluator's side of the match too
    return fused_pub, face_pub


def face_result(label, stamp):
    probabilities = [0.05] * 7
    probabilities[EMOTION_LABELS.index(label)] = 0.7
    msg = EmotionResult(modality='face', label_names=list(EMOTION_LABELS),
                        probabilities=probabilities, label=label, confidence=0.7, track_id=1,
                        model_id='test-face')
    msg.header.stamp = sec_to_stamp(stamp)
    msg.face_roi.width = msg.face_roi.height = 100
    return msg


def test_scores_against_a_label_file_and_writes_on_request_and_on_shutdown(ros_node, tmp_path):
    Trigger = pytest.importorskip(
        'std_srvs.srv', reason='std_srvs is not installed (ros-std-srvs wheel)').Trigger
    node, executor = ros_node
    labels = tmp_path / 'labels.csv'
    labels.write_text('start,end,label\n0.0,2.0,happy\n2.0,4.0,sad\n')
    start = time.time() + 6.0  # the system clock: this run is live, not a replay
    out = tmp_path / 'report'
    process = evaluator(f'output_dir:={out}', f'labels_file:={labels}',
                        f'bag_start_s:={start}', 'end_after_idle_s:=0.0', 'plots:=false')
    try:
        fused_pub, face_pub = matched_publishers(node, executor, process)
        assert time.time() < start, 'the evaluator took too long to start'
        while time.time() < start:
            spin_until(executor, lambda: False, 0.05)
        while time.time() < start + 4.0:  # happy for 2 s, then sad (0.2 s late), at 10 Hz
            now = time.time()
            label = 'happy' if now < start + 2.2 else 'sad'
            fused = FusedEmotion(emotion=label, confidence=0.7)
            fused.header.stamp = sec_to_stamp(now)
            fused_pub.publish(fused)
            face_pub.publish(face_result(label, now - 0.05))
            spin_until(executor, lambda: False, 0.1)

        client = node.create_client(Trigger, 'evaluator_node/write_report')
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(Trigger.Request())
        assert spin_until(executor, future.done, 20.0)
        assert future.result().success, future.result().message
        report = json.loads((out / 'report.json').read_text())
        assert report['mode'] == 'live' and report['truth_segments'] == 2
        fused = report['summary']['fused']
        assert fused['coverage'] > 0.9, fused
        assert 0.8 < fused['accuracy'] < 1.0, fused  # wrong only in the 0.2 s of delay
        assert report['per_result']['face']['samples'] > 30
        assert report['models'] == {'face': 'test-face'}
        assert 'no message on /emotion/voice' in process.output()
        first = (out / 'report.json').stat().st_mtime_ns

        later = FusedEmotion(emotion='sad', confidence=0.7)
        later.header.stamp = sec_to_stamp(time.time())
        fused_pub.publish(later)
        spin_until(executor, lambda: False, 0.5)
    finally:
        code = process.stop()
        output = process.log_path.read_text()
    assert code == 0, output
    assert (out / 'report.json').stat().st_mtime_ns > first  # what came since: on Ctrl-C
    assert output.count('report written') == 2, output


@pytest.mark.parametrize('parameters, reason', [
    ([], 'output_dir must be set'),
    (['output_dir:=/tmp/x', 'labels_file:=/nonexistent/labels.csv'], 'label file'),
    (['output_dir:=/tmp/x', 'fused_timeout_s:=0.0'], 'fused_timeout_s'),
])
def test_bad_parameters_stop_the_node_with_the_reason(parameters, reason):
    process = evaluator(*parameters)
    process.process.wait(30)
    output = process.output()
    assert process.stop() == 1
    assert reason in output and '[FATAL]' in output


def test_fused_states_before_the_bag_do_not_end_the_evaluation(ros_node, tmp_path):
    """The fusion node publishes states while the bag has not started: the idle timer waits
    for something only a playing bag produces (a CI run once ended before the bag began)."""
    node, executor = ros_node
    labels = tmp_path / 'labels.csv'
    labels.write_text('start,end,label\n0.0,60.0,happy\n')
    out = tmp_path / 'report'
    process = evaluator(f'output_dir:={out}', f'labels_file:={labels}',
                        f'bag_start_s:={time.time()}', 'end_after_idle_s:=1.0', 'plots:=false')
    try:
        fused_pub, face_pub = matched_publishers(node, executor, process)
        fused_pub.publish(FusedEmotion(emotion='happy', confidence=0.7))  # before the bag
        spin_until(executor, lambda: False, 3.0)
        assert process.process.poll() is None, process.output()
        assert 'the bag ended' not in process.output()
        for _ in range(10):  # the bag plays for 1 s, then stops
            face_pub.publish(face_result('happy', time.time()))
            spin_until(executor, lambda: False, 0.1)
        process.process.wait(10)
    finally:
        code = process.stop()
        output = process.log_path.read_text()
    assert code == 0, output
    assert 'the bag ended' in output and output.count('report written') == 1, output
