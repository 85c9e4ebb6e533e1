"""Restart benchmark: how soon a face or voice node process gives results after it is
launched, and after ``kill -9`` and a respawn as launch does it; writes a table.

    python -m mika_bringup.restart_benchmark [--nodes face voice] [--runs 3]
                                             [--output bench/results/restart]

Each node runs as its own process, in a namespace of its own (other DDS traffic on the
domain cannot answer for it), fed live by this process: 640x480 rgb8 frames of a real face
at 15 fps for the face node; for the voice node a real RAVDESS sentence and 1 s of silence,
looped in 100 ms AudioDataStamped chunks at real-time rate (so a voice result also waits for
the end of the utterance being spoken). A run launches the node, waits for its first
result, kills it (SIGKILL), waits launch's respawn delay and starts it again. "cold":
the LiteRT cache (``MIKA_CACHE_DIR``) is empty at the launch and again at the respawn (each
start imports Keras and exports the model); "warm": it holds the node's models.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from mika_common.process_signals import stop_process_group

#: launch/perception.launch.py's respawn_delay.
RESPAWN_DELAY_S = 2.0
#: What a node logs once it listens to its input.
READY_MARKER = ']: ready: '
FACE_FPS = 15.0
AUDIO_RATE = 16000
CHUNK = 1600  # 100 ms


@dataclass
class Run:
    node: str
    cache: str
    launch_ready_s: Optional[float]
    launch_result_s: Optional[float]
    restart_ready_s: Optional[float]
    restart_result_s: Optional[float]
    kill_result_s: Optional[float]


class NodeUnderTest:
    """One node process, its log, and the times its ready line and first result came."""

    def __init__(self, kind: str, namespace: str, cache_dir: Path, log_dir: Path):
        self.kind, self.namespace, self.cache_dir = kind, namespace, cache_dir
        self.log_dir = log_dir
        self.process: Optional[subprocess.Popen] = None
        self.started = self.ready_at = self.result_at = None
        self._log = None

    def start(self) -> None:
        module = {'face': 'mika_perception.face_node', 'voice': 'mika_voice.voice_node'}
        env = dict(os.environ, MIKA_CACHE_DIR=str(self.cache_dir))
        self._log = tempfile.NamedTemporaryFile('w+', dir=self.log_dir, suffix='.log',
                                                delete=False)
        self.started, self.ready_at, self.result_at = time.monotonic(), None, None
        self.process = subprocess.Popen(
            [sys.executable, '-m', module[self.kind], '--ros-args', '-r',
             f'__ns:={self.namespace}'], stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)

    def poll(self) -> None:
        if self.ready_at is None and READY_MARKER in Path(self._log.name).read_text():
            self.ready_at = time.monotonic()

    def on_result(self) -> None:
        if self.result_at is None and self.process is not None:
            self.result_at = time.monotonic()

    def kill(self) -> float:
        killed = time.monotonic()
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None
        return killed

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
        self.process = None

    def output(self) -> str:
        return Path(self._log.name).read_text()


class Feeder:
    """This process's ROS side: publishes the node's input live and hears its results."""

    def __init__(self, kind: str, namespace: str, on_result: Callable[[], None]):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from mika_msgs.msg import EmotionResult
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('restart_benchmark', namespace=namespace,
                                      context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.node.create_subscription(EmotionResult, f'emotion/{kind}',
                                      lambda msg: on_result(), 10)
        if kind == 'face':
            self._start_camera()
        else:
            self._start_microphone()

    def _start_camera(self) -> None:
        from sensor_msgs.msg import Image

        from mika_common.ros_io import sec_to_stamp, sensor_qos
        from mika_perception.sample_frames import face_frame
        frame = face_frame()
        data = np.ascontiguousarray(frame[:, :, ::-1]).tobytes()
        publisher = self.node.create_publisher(Image, 'image', sensor_qos())

        def publish():
            msg = Image(encoding='rgb8', height=frame.shape[0], width=frame.shape[1],
                        step=frame.shape[1] * 3, data=data)
            msg.header.stamp = sec_to_stamp(time.time())
            publisher.publish(msg)
        self.node.create_timer(1.0 / FACE_FPS, publish)

    def _start_microphone(self) -> None:
        import audio_common_msgs.msg as audio_msgs
        import soundfile

        from mika_common.ros_io import latched_qos, sec_to_stamp
        from mika_common.workspace import shared_data_dir
        path = shared_data_dir() / 'ravdess' / 'wav' / 'Actor_01' / '03-01-05-01-01-01-01.flac'
        speech, rate = soundfile.read(path, dtype='float32')
        if rate != AUDIO_RATE:
            raise ValueError(f'{path}: {rate} Hz, expected {AUDIO_RATE}')
        loop = np.concatenate([speech, np.zeros(AUDIO_RATE, np.float32)])
        pcm = (np.clip(loop, -1, 1) * 32767).astype('<i2')
        info = self.node.create_publisher(audio_msgs.AudioInfo, 'audio_info', latched_qos())
        info.publish(audio_msgs.AudioInfo(channels=1, sample_rate=AUDIO_RATE,
                                          sample_format='S16LE', bitrate=0,
                                          coding_format='wave'))
        publisher = self.node.create_publisher(audio_msgs.AudioDataStamped, 'audio_stamped', 50)
        position = [0]

        def publish():
            start = position[0] % (pcm.size - pcm.size % CHUNK)
            msg = audio_msgs.AudioDataStamped()
            msg.header.stamp = sec_to_stamp(time.time())
            msg.audio.data = pcm[start:start + CHUNK].tobytes()
            publisher.publish(msg)
            position[0] += CHUNK
        self.node.create_timer(CHUNK / AUDIO_RATE, publish)

    def spin_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not predicate():
            self.executor.spin_once(timeout_sec=0.01)
        return predicate()

    def close(self) -> None:
        import rclpy
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _since(start: float, moment: Optional[float]) -> Optional[float]:
    return None if moment is None else moment - start


def one_run(kind: str, cache: str, cache_dir: Path, log_dir: Path, timeout_s: float) -> Run:
    """Launch, first result, kill -9, respawn delay, start again, first result."""
    namespace = f'/restart_bench_{os.getpid()}_{time.monotonic_ns() % 10**9}'
    node = NodeUnderTest(kind, namespace, cache_dir, log_dir)
    feeder = Feeder(kind, namespace, node.on_result)

    def ready_and_result():
        node.poll()
        return node.result_at is not None and node.ready_at is not None

    try:
        if cache == 'cold':
            shutil.rmtree(cache_dir, ignore_errors=True)
        node.start()
        if not feeder.spin_until(ready_and_result, timeout_s):
            raise RuntimeError(f'{kind} node gave no result in {timeout_s:.0f} s after its '
                               f'launch:\n{node.output()[-3000:]}')
        launch = (_since(node.started, node.ready_at), _since(node.started, node.result_at))
        feeder.spin_until(lambda: False, 1.0)  # running a while, as a node that crashes
        killed = node.kill()
        if cache == 'cold':
            shutil.rmtree(cache_dir, ignore_errors=True)
        feeder.spin_until(lambda: False, RESPAWN_DELAY_S)
        node.start()
        if not feeder.spin_until(ready_and_result, timeout_s):
            raise RuntimeError(f'{kind} node gave no result in {timeout_s:.0f} s after its '
                               f'restart:\n{node.output()[-3000:]}')
        return Run(kind, cache, *launch, _since(node.started, node.ready_at),
                   _since(node.started, node.result_at), _since(killed, node.result_at))
    finally:
        node.stop()
        feeder.close()


def _stat(values: List[Optional[float]]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return 'n/a'
    return f'{np.median(values):.2f} ({max(values):.2f})'


def table(runs: List[Run], notes: List[str]) -> str:
    load = os.getloadavg()
    lines = [
        '# Restart benchmark',
        '',
        f'Written by `mika_bringup.restart_benchmark` on '
        f'{datetime.datetime.now().isoformat(timespec="minutes")} ({os.cpu_count()} cores, '
        f'load average {load[0]:.1f} at the end: other processes shared the cores).',
        '',
        'Seconds, median (max) over the runs. launch: from starting the node process; '
        f'restart: from starting it again {RESPAWN_DELAY_S:.0f} s (launch\'s respawn_delay) '
        'after `kill -9`; kill: from the kill. ready: the node\'s "ready:" line (it listens; '
        'the voice node warms its features up after it); result: its first EmotionResult. '
        'cold: empty LiteRT '
        'cache at both starts (each start imports Keras/TensorFlow and exports the model to '
        'LiteRT); warm: the cache holds the node\'s models.',
        '',
        '| node | cache | runs | launch -> ready | launch -> result | restart -> ready '
        '| restart -> result | kill -> result |',
        '|---|---|---:|---:|---:|---:|---:|---:|',
    ]
    groups: Dict[tuple, List[Run]] = {}
    for run in runs:
        groups.setdefault((run.node, run.cache), []).append(run)
    for (node, cache), group in groups.items():
        cells = [_stat([getattr(r, name) for r in group]) for name in (
            'launch_ready_s', 'launch_result_s', 'restart_ready_s', 'restart_result_s',
            'kill_result_s')]
        lines.append(f'| {node} | {cache} | {len(group)} | ' + ' | '.join(cells) + ' |')
    lines += [''] + [f'- {note}' for note in notes] + ['']
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--nodes', nargs='+', default=['face', 'voice'],
                        choices=('face', 'voice'))
    parser.add_argument('--runs', type=int, default=3, help='runs per node and cache state')
    parser.add_argument('--timeout', type=float, default=120.0,
                        help='seconds a start may take to its first result')
    parser.add_argument('--output', default='bench/results/restart',
                        help='path prefix: writes <output>.md and <output>.json')
    parser.add_argument('--note', action='append', default=[],
                        help='a line for the notes under the table (e.g. which code ran)')
    args = parser.parse_args(argv)
    notes = args.note + [f'face: 640x480 rgb8 frames of one real face at {FACE_FPS:.0f} fps; the '
             'tracker reports a face from its second frame on.',
             'voice: RAVDESS Actor_01 sentence 03-01-05-01-01-01-01 (3.3 s) and 1 s of '
             'silence, looped at real time; a result comes 0.4 s (hangover) after an '
             'utterance ends, so restart -> result includes waiting for the sentence '
             'being spoken to end.']
    runs: List[Run] = []
    with tempfile.TemporaryDirectory(prefix='mika-restart-') as directory:
        for kind in args.nodes:
            cache_dir = Path(directory) / f'{kind}-cache'
            for cache in ('cold', 'warm'):
                for index in range(args.runs):
                    try:
                        run = one_run(kind, cache, cache_dir, Path(directory), args.timeout)
                    except (RuntimeError, OSError, ValueError) as error:
                        print(f'restart_benchmark: {error}', file=sys.stderr)
                        return 1
                    runs.append(run)
                    print(run, flush=True)
    text = table(runs, notes)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix('.md').write_text(text)
    output.with_suffix('.json').write_text(json.dumps([asdict(r) for r in runs], indent=1))
    print(text)
    print(f'written to {output}.md')
    return 0


if __name__ == '__main__':
    sys.exit(main())
