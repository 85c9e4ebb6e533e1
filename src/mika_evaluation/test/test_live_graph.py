"""Live mode end to end: the graph (run_graph, config/perception.yaml, use_sim_time), the
evaluator node and play_bag as processes over DDS, against the offline replay of the same bag.

The player holds its /clock after each camera frame until the face node is done with it
(``--wait-for-results``: its result arrived, or its /diagnostics count the frame handled,
as for a frame without a face), and the face node subscribes reliably: bag time stands
still while the graph works, so on a machine of any load, even with the face node stopped
for seconds (the test stops it for STALL_S mid-play), no frame is dropped or lost and the
graph computes what the offline replay computes. The test compares exactly that: every
face and voice result the evaluator heard is the offline one (same stamps, same
probabilities), and the fused output stays within TOLERANCE of offline and of the fusion
core fed the results heard (the report's ``fusion_core``). What is left to differ is
timing: a voice result reaches the fusion node after its compute time instead of at its
chunk's bag time, /clock advances in 25 ms steps, and the fused state is sampled from what
was published.

Without the hold, the face node dropped frames it had no time for on a loaded 2-core
machine (fused accuracy live 0.257 against 0.343 offline). With a hold that gave up after
2 s without a result, CI lost 4 of 201 frames once: a stalled face node left the player's
reliable frames unacknowledged while newer ones replaced them in the writer's history
(reproduced by the stall here: 3 frames never reached the node, 198 of 201 results).
Measured with the hold on results only, 16 of 16 runs passed here beside CPU hogs and an
hour-long soak (2 cores, load 3-9), live minus offline fused accuracy -0.014 to +0.007.

The camera is recorded as JPEG (CompressedImage, about 40 kB a frame), as robots usually
record it: raw 900 kB frames needed Fast DDS's LARGE_DATA transport, with which the face
and fusion nodes sometimes never matched; JPEG frames travel over the default transports.
"""
import json
import os
import pathlib
import signal
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from mika_common.testing import NodeProcess, child_pids  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[3]
PARAMS_FILE = REPO / 'config' / 'perception.yaml'
LIVE_LAYOUT = dict(segments=5, utterances_per_segment=1, fps=15.0, seed=4)
#: |live - offline| allowed for the fused output (measured: see the module docstring).
TOLERANCE = {'accuracy': 0.08, 'coverage': 0.05}
#: Longest hold of the player for one frame: only a node that neither answers nor reports
#: (a frame without a face is reported handled on /diagnostics within a second).
RESULT_TIMEOUT_S = 60.0
#: The face node is stopped (SIGSTOP) this long, this long after play began: a stall as a
#: loaded machine makes them, which the player must wait out without losing a frame.
STALL_S, STALL_AFTER_S = 5.0, 3.0


def _child_process(parent: int, name: str) -> int:
    """The pid of the child of ``parent`` whose command line has ``name``."""
    for pid in child_pids(parent):
        if name in pathlib.Path(f'/proc/{pid}/cmdline').read_text():
            return pid
    raise AssertionError(f'no {name} process among the children of {parent}')


def stall(pid: int, seconds: float) -> None:
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope='module')
def compressed_params(tmp_path_factory):
    """config/perception.yaml with the face node on the CompressedImage topic, subscribed
    reliably (the player sends held frames reliably: none is lost)."""
    import yaml
    params = yaml.safe_load(PARAMS_FILE.read_text())
    params['/**/face_node']['ros__parameters'].update(input_type='compressed',
                                                      reliability='reliable')
    path = tmp_path_factory.mktemp('params') / 'perception_compressed.yaml'
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope='module')
def live_bag(tmp_path_factory, small_sources):
    from mika_evaluation.bag_builder import LayoutConfig, build
    faces, voices = small_sources
    bag = tmp_path_factory.mktemp('live') / 'live_mcap'
    build(bag, faces, voices, LayoutConfig(**LIVE_LAYOUT, image_format='jpeg'),
          storage='mcap')
    return bag


def _results(log, modality):
    return sorted((r for r in log.results if r.modality == modality),
                  key=lambda r: (r.stamp, r.end_stamp, r.area))


def test_live_report_agrees_with_the_offline_replay(live_bag, compressed_params, tmp_path):
    from mika_evaluation.node_config import NodeParameters
    from mika_evaluation.offline import fuse, load_replay, replay
    from mika_evaluation.report import build_report
    env = {**os.environ, 'FASTDDS_BUILTIN_TRANSPORTS': 'DEFAULT'}
    live_dir = tmp_path / 'live'
    graph = NodeProcess([sys.executable, '-m', 'mika_bringup.run_graph', 'use_sim_time:=true',
                         f'params_file:={compressed_params}'], env=env)
    evaluator = NodeProcess([
        sys.executable, '-m', 'mika_evaluation.evaluator_node', '--ros-args',
        '-p', 'use_sim_time:=true', '-p', f'output_dir:={live_dir}',
        '-p', f'params_file:={compressed_params}', '-p', f'bag:={live_bag}',
        '-p', 'end_after_idle_s:=2.0', '-p', 'plots:=false', '-p', 'save_replay:=true'],
        env=env)
    play = None
    try:
        # the offline replay runs while the nodes load their models, and ends before play
        params = NodeParameters.load(compressed_params)
        offline_log = replay(live_bag, params)
        offline = build_report(offline_log, fuse(offline_log, params.fusion), params)
        if graph.process.poll() is not None:
            pytest.skip(f'the graph did not start (packages not built?): {graph.output()}')
        play = NodeProcess(
            [sys.executable, '-m', 'mika_evaluation.play_bag', str(live_bag), '--clock',
             '--wait-for-subscribers', '60', '--delay', '1',
             '--wait-for-results', 'emotion/face', '--result-timeout', str(RESULT_TIMEOUT_S)],
            env=env)
        assert play.wait_for_output('playing ', 120), play.output()
        time.sleep(STALL_AFTER_S)
        stall(_child_process(graph.process.pid, 'face_node'), STALL_S)
        play.process.wait(timeout=300)
        play_log = play.output()
        assert play.process.returncode == 0, play_log
        assert 'no subscriber' not in play_log, play_log + evaluator.output()
        assert ' 0 frames neither answered nor reported' in play_log, play_log
        deadline = time.monotonic() + 30
        while evaluator.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert evaluator.process.returncode == 0, evaluator.output()
    finally:
        if play is not None:
            play.stop()
        evaluator.stop()
        graph.stop()
    live = json.loads((live_dir / 'report.json').read_text())
    assert live['mode'] == 'live' and live['bag'] == str(live_bag)
    assert live['truth_segments'] == offline['truth_segments'] == LIVE_LAYOUT['segments']
    assert live['labelled_s'] == pytest.approx(offline['labelled_s'], abs=0.1)
    live_log = load_replay(live_dir / 'replay.pkl')
    for modality in ('face', 'voice'):
        heard, computed = _results(live_log, modality), _results(offline_log, modality)
        assert computed, modality
        missing = sorted({r.stamp for r in computed} - {r.stamp for r in heard})
        assert [(r.stamp, r.end_stamp, r.area) for r in heard] == \
            [(r.stamp, r.end_stamp, r.area) for r in computed], \
            (f'{modality}: {len(heard)} results heard, {len(computed)} computed offline; '
             f'stamps missing live {missing[:10]}; counters {live["counters"]}; '
             f'play: {play_log[-600:]}')
        for live_result, offline_result in zip(heard, computed):
            np.testing.assert_allclose(live_result.probabilities, offline_result.probabilities,
                                       atol=1e-5, err_msg=modality)
        assert live['counters'].get(f'fusion_node: fusion: {modality} received', 0) > 0, \
            f'no {modality} result reached the fusion node: {live["counters"]}'
    details = (f"live {live['summary']['fused']} offline {offline['summary']['fused']} "
               f"core {live['fusion_core']} counters {live['counters']} "
               f"play: {play_log[-400:]}")
    for key, tolerance in TOLERANCE.items():
        for reference, scores in (('offline', offline['summary']['fused']),
                                  ('the fusion core', live['fusion_core']['summary'])):
            difference = live['summary']['fused'][key] - scores[key]
            assert abs(difference) <= tolerance, \
                f'fused {key} differs from {reference} by {difference:+.3f}: ' + details
    print(f'fused accuracy live {live["summary"]["fused"]["accuracy"]:.3f} offline '
          f'{offline["summary"]["fused"]["accuracy"]:.3f} core '
          f'{live["fusion_core"]["summary"]["accuracy"]:.3f} (same state on '
          f'{live["fusion_core"]["agreement"]:.1%} of the ticks); coverage '
          f'{live["summary"]["fused"]["coverage"]:.3f} / '
          f'{offline["summary"]["fused"]["coverage"]:.3f}; face results '
          f'{len(_results(live_log, "face"))} / {len(_results(offline_log, "face"))}; '
          + play_log.strip().splitlines()[-1].split(': ', 1)[-1])
