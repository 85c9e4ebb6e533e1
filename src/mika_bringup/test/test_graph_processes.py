"""Process-level tests: nodes started as their own processes with config/perception.yaml,
exchanging mika_msgs with this test process over DDS."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

rclpy = pytest.importorskip('rclpy')
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from mika_bringup.graph import default_arguments, node_specs  # noqa: E402
from mika_bringup.run_graph import node_command  # noqa: E402
from mika_common.emotions import EMOTION_LABELS  # noqa: E402
from mika_common.ros_io import latched_qos, results_qos  # noqa: E402
from mika_common.testing import NodeProcess, child_pids, spin_until  # noqa: E402
from mika_msgs.msg import EmotionResult, FusedEmotion  # noqa: E402


PARAMS_FILE = pathlib.Path(__file__).resolve().parents[3] / 'config' / 'perception.yaml'


def start(node_name, **overrides):
    arguments = {**default_arguments(), 'params_file': str(PARAMS_FILE), **overrides}
    spec = next(s for s in node_specs(arguments) if s.name == node_name)
    return NodeProcess(node_command(spec, arguments))


def face_result(node, label, confidence=0.8):
    probabilities = [(1.0 - confidence) / 6] * 7
    probabilities[EMOTION_LABELS.index(label)] = confidence
    msg = EmotionResult(modality=EmotionResult.MODALITY_FACE, label_names=list(EMOTION_LABELS),
                        probabilities=probabilities, label=label, confidence=confidence,
                        track_id=1)
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.header.frame_id = 'camera'
    msg.face_roi.width = msg.face_roi.height = 120
    return msg


def test_fusion_and_logger_processes_follow_a_change_and_a_late_subscriber_gets_the_state(
        ros_node):
    node, executor = ros_node
    fusion = start('fusion_node')
    logger = start('emotion_logger')
    try:
        publisher = node.create_publisher(EmotionResult, 'emotion/face', results_qos())
        received = []
        node.create_subscription(FusedEmotion, 'emotion/fused', received.append, latched_qos())
        assert spin_until(executor, lambda: publisher.get_subscription_count() > 0, 20.0), \
            fusion.output()

        def feed(label, seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                publisher.publish(face_result(node, label))
                spin_until(executor, lambda: False, 0.1)

        feed('happy', 4.0)
        assert any(m.emotion == 'happy' for m in received), fusion.output()
        feed('sad', 6.0)
        emotions = [m.emotion for m in received]
        assert emotions[-1] == 'sad', emotions
        switches = sum(1 for a, b in zip(emotions, emotions[1:]) if a != b)
        assert switches <= 3, emotions  # unknown -> happy -> sad, no flicker
        last = received[-1]
        assert last.attitude == FusedEmotion.ATTITUDE_NEGATIVE
        assert [c.modality for c in last.contributions] == ['face']
        assert abs(sum(last.probabilities) - 1.0) < 1e-3

        late = []
        node.create_subscription(FusedEmotion, 'emotion/fused', late.append, latched_qos())
        assert spin_until(executor, lambda: bool(late), 5.0)
        assert late[0].emotion in ('sad', 'unknown')
        assert logger.wait_for_output('sad', 10.0), logger.output()
    finally:
        assert fusion.stop() == 0, fusion.output()
        assert logger.stop() == 0, logger.output()


def test_a_silent_input_is_reported_with_the_topics_of_that_type(ros_node):
    node, executor = ros_node
    decoy = node.create_publisher(EmotionResult, 'emotion/face_unwired', results_qos())
    fusion = start('fusion_node')
    try:
        assert fusion.wait_for_output('no message on /emotion/face', 20.0), fusion.output()
        assert '/emotion/face_unwired' in fusion.output()
    finally:
        node.destroy_publisher(decoy)
        assert fusion.stop() == 0, fusion.output()


def test_a_qos_mismatch_is_reported_with_the_setting_to_change(ros_node):
    node, executor = ros_node
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    publisher = node.create_publisher(EmotionResult, 'emotion/voice', best_effort)
    fusion = start('fusion_node')
    try:
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and 'incompatible QoS' not in fusion.output():
            publisher.publish(face_result(node, 'happy'))
            spin_until(executor, lambda: False, 0.2)
        assert 'incompatible QoS on /emotion/voice' in fusion.output(), fusion.output()
        assert 'RELIABILITY' in fusion.output()
        assert 'make its publisher reliable' in fusion.output()
    finally:
        node.destroy_publisher(publisher)
        assert fusion.stop() == 0, fusion.output()



def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = pathlib.Path(f'/proc/{pid}/stat')
    return stat.exists() and stat.read_text().split(') ')[1][0] != 'Z'  # not a zombie


@pytest.fixture
def graph_runner(tmp_path):
    """run_graph (fusion node only) started the way a shell starts a background command, with
    SIGINT ignored; (process, pid of its node, log path)."""
    if not pathlib.Path(f'/proc/{os.getpid()}/task/{os.getpid()}/children').exists():
        pytest.skip('needs Linux /proc to find the runner\'s children')
    log_path = tmp_path / 'run_graph.log'
    runner = subprocess.Popen(
        [sys.executable, '-m', 'mika_bringup.run_graph', f'params_file:={PARAMS_FILE}',
         'enable_face:=false', 'enable_voice:=false'],
        stdout=log_path.open('w'), stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline and 'fusing emotion/face' not in log_path.read_text():
        time.sleep(0.1)
    assert 'fusing emotion/face' in log_path.read_text(), log_path.read_text()
    children = child_pids(runner.pid)
    assert len(children) == 1
    yield runner, children[0], log_path
    for pid in (runner.pid, *children):
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    runner.wait()


def test_the_graph_runner_stops_its_nodes_on_ctrl_c_even_when_started_in_the_background(
        graph_runner):
    # a background start ignores SIGINT: the runner used to ignore Ctrl-C, be SIGKILLed and
    # leave its nodes publishing into later tests
    runner, node_pid, log_path = graph_runner
    os.kill(runner.pid, signal.SIGINT)
    assert runner.wait(15) == 0, log_path.read_text()
    assert "stopped: {'fusion_node': 0}" in log_path.read_text()
    assert not _alive(node_pid)


def test_the_nodes_end_with_a_killed_graph_runner(graph_runner):
    runner, node_pid, log_path = graph_runner
    runner.kill()
    runner.wait()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and _alive(node_pid):
        time.sleep(0.1)
    assert not _alive(node_pid), log_path.read_text()


STOP_WITHIN_S = 3.0


@pytest.mark.parametrize('second_after_s', [None, 0.05, 0.2],
                         ids=['once', 'twice_50ms_apart', 'twice_200ms_apart'])
@pytest.mark.parametrize('program', ['fusion_node', 'run_graph'])
def test_ctrl_c_in_a_terminal_stops_at_once_with_exit_code_0_and_no_traceback(
        program, second_after_s):
    # a terminal's Ctrl-C signals the whole process group; launch then forwards its own
    # SIGINT to each node, and an impatient user presses Ctrl-C again: one SIGINT or two
    if program == 'fusion_node':
        arguments = {**default_arguments(), 'params_file': str(PARAMS_FILE)}
        command = node_command(
            next(s for s in node_specs(arguments) if s.name == program), arguments)
    else:
        command = [sys.executable, '-m', 'mika_bringup.run_graph', f'params_file:={PARAMS_FILE}',
                   'enable_face:=false', 'enable_voice:=false']
    started = NodeProcess(command)  # a process group of its own, SIGINT not ignored
    try:
        assert started.wait_for_output('fusing emotion/face', 20.0), started.output()
        processes = [started.process.pid, *child_pids(started.process.pid)]
        signalled = time.monotonic()
        os.killpg(started.process.pid, signal.SIGINT)
        if second_after_s is not None:
            time.sleep(second_after_s)
            os.killpg(started.process.pid, signal.SIGINT)  # a zombie's group still exists
        while time.monotonic() - signalled < STOP_WITHIN_S and any(map(_alive, processes)):
            time.sleep(0.02)
        stop_s = time.monotonic() - signalled
    finally:
        code = started.stop()
    output = started.log_path.read_text()
    assert code == 0, output
    if program == 'run_graph':
        assert "stopped: {'fusion_node': 0}" in output, output
    assert 'Traceback' not in output and 'KeyboardInterrupt' not in output, output
    assert stop_s < STOP_WITHIN_S, output
