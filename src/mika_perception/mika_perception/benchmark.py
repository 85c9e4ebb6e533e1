"""Face pipeline benchmark: per-frame latency by stage, throughput and memory; writes a table.

ROS-free; runs exactly :class:`~mika_perception.pipeline.FacePipeline` and the message
conversion the node uses, on one thread (OpenCV, LiteRT and TensorFlow limited to one),
on frames showing real faces (:mod:`mika_perception.sample_frames`) that drift as a
hand-held camera would. Scenarios: 640x480 with one face and 1280x720 with three, as
sensor_msgs/Image rgb8 (the commonest camera encoding) and 640x480 as JPEG. Memory: the
process RSS after warm-up and after ``--memory-frames`` frames.

    face_benchmark [--model PATH] [--frames 300] [--memory-frames 10000]
"""
from __future__ import annotations

import os

# One thread everywhere: the goal is stated for one core. Must precede TF/OpenCV imports.
for _variable in ('OMP_NUM_THREADS', 'TF_NUM_INTRAOP_THREADS', 'TF_NUM_INTEROP_THREADS'):
    os.environ.setdefault(_variable, '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import argparse  # noqa: E402
import datetime  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, List  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from mika_perception.detection import DETECTORS, create_detector  # noqa: E402
from mika_perception.face_parameters import node_defaults  # noqa: E402
from mika_perception.image_conversion import compressed_to_bgr, image_to_bgr  # noqa: E402
from mika_perception.pipeline import STAGES, FacePipeline  # noqa: E402
from mika_perception.resources import FACE_MODEL_FILE, resolve_model_path  # noqa: E402
from mika_perception.sample_frames import face_frame, three_face_frame  # noqa: E402
from mika_perception.tracking import FaceTracker  # noqa: E402

GOAL_P95_MS = 10.0
NODE_DEFAULTS = node_defaults()
FPS = 30.0


@dataclass
class Scenario:
    name: str
    faces: int
    convert: List[Callable[[], np.ndarray]]  # one per distinct frame, cycled


def _drifting(make: Callable[[int, int], np.ndarray], count: int = 60, amplitude: int = 24):
    """``count`` frames whose content is shifted along a slow loop (a hand-held camera)."""
    frames = []
    for index in range(count):
        phase = 2 * math.pi * index / count
        dx, dy = int(amplitude * math.sin(phase)), int(amplitude / 2 * math.sin(2 * phase))
        frames.append(make(dx, dy))
    return frames


def scenarios() -> List[Scenario]:
    def vga(dx, dy):
        return face_frame(640, 480, face_side=300, x=170 + dx, y=90 + dy)

    def hd(dx, dy):
        return np.roll(three_face_frame(), (dy, dx), axis=(0, 1))

    def as_rgb8(frame):
        data = np.ascontiguousarray(frame[:, :, ::-1]).tobytes()
        height, width = frame.shape[:2]
        return lambda: image_to_bgr('rgb8', width, height, width * 3, data)

    def as_jpeg(frame):
        data = cv2.imencode('.jpg', frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        return lambda: compressed_to_bgr('jpeg', data)

    def close(dx, dy):  # a person leaning towards the robot
        return face_frame(640, 480, face_side=470, x=85 + dx // 2, y=5)

    def small(dx, dy):  # a 40-pixel face, farther away: found by the tiles, then followed
        return face_frame(640, 480, face_side=128, x=450 + dx, y=300 + dy)

    def empty(dx, dy):  # nobody there: the tiled search runs on every Nth frame
        return np.roll(face_frame(640, 480, face_side=300, x=170, y=90)[:, :160], dx,
                       axis=1).repeat(4, axis=1)

    vga_frames, hd_frames = _drifting(vga), _drifting(hd)
    return [
        Scenario('640x480 rgb8, 1 face', 1, [as_rgb8(f) for f in vga_frames]),
        Scenario('1280x720 rgb8, 3 faces', 3, [as_rgb8(f) for f in hd_frames]),
        Scenario('640x480 jpeg, 1 face', 1, [as_jpeg(f) for f in vga_frames]),
        Scenario('640x480 rgb8, 1 face filling the height', 1,
                 [as_rgb8(f) for f in _drifting(close)]),
        Scenario('640x480 rgb8, 1 face of 40 px', 1, [as_rgb8(f) for f in _drifting(small)]),
        Scenario('640x480 rgb8, no face', 0, [as_rgb8(f) for f in _drifting(empty)]),
    ]


def run_frames(pipeline: FacePipeline, scenario: Scenario, count: int, start_index: int = 0):
    """Per-frame stage timings (ms), CPU time of the frame (ms) and faces reported.

    CPU time is what the frame cost this thread; on a busy machine wall time adds the
    time spent waiting for a core.
    """
    timings = {stage: np.empty(count) for stage in STAGES}
    cpu = np.empty(count)
    faces = np.empty(count, dtype=int)
    for i in range(count):
        index = start_index + i
        convert = scenario.convert[index % len(scenario.convert)]
        cpu_start = time.thread_time()
        start = time.perf_counter()
        image = convert()
        result = pipeline.process_image(image, index / FPS, time.perf_counter() - start)
        cpu[i] = (time.thread_time() - cpu_start) * 1e3
        for stage in STAGES:
            timings[stage][i] = result.timings[stage] * 1e3
        faces[i] = len(result.faces)
    return timings, cpu, faces


def rss_mb() -> float:
    with open('/proc/self/statm') as statm:
        return int(statm.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def _pct(values, q) -> float:
    return float(np.percentile(values, q))


def benchmark(model_paths: List[str], detector_kind: str, search_tiles: int,
              idle_search_every: int, runtime: str, flip_tta: bool, frames: int, warmup: int,
              memory_frames: int) -> str:
    from mika_perception.face_model import FaceEmotionClassifier  # imports TensorFlow

    cv2.setNumThreads(1)
    classifier = FaceEmotionClassifier(model_paths, flip_tta=flip_tta, runtime=runtime,
                                       num_threads=1)
    detector, note = create_detector(detector_kind, num_threads=1, search_tiles=search_tiles,
                                     idle_search_every=idle_search_every)
    lines = []
    rows = []
    vga_pipeline = None
    for scenario in scenarios():
        pipeline = FacePipeline(detector, FaceTracker(), classifier, 0.3)
        run_frames(pipeline, scenario, warmup)
        timings, cpu, faces = run_frames(pipeline, scenario, frames, warmup)
        total = sum(timings[stage] for stage in STAGES)
        rows.append((scenario, timings, total, cpu, faces))
        if vga_pipeline is None:
            vga_pipeline = (pipeline, scenario)
    memory = None
    if memory_frames > 0:
        pipeline, scenario = vga_pipeline
        before = rss_mb()
        run_frames(pipeline, scenario, memory_frames, warmup + frames)
        memory = (before, rss_mb())

    load = os.getloadavg()
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as info:
            cpu = next(line.split(':', 1)[1].strip() for line in info
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    lines += [
        '# Face pipeline benchmark',
        '',
        f'Written by `face_benchmark` on {datetime.datetime.now().isoformat(timespec="minutes")}'
        f' ({cpu}, {os.cpu_count()} cores, load average {load[0]:.1f} at the end: other '
        'processes shared the cores). One thread for OpenCV, LiteRT and TensorFlow.',
        '',
        f'- model: {classifier.model_id} ({", ".join(model_paths)}), runtime '
        f'{"/".join(classifier.runtimes)}, flip TTA {"on" if flip_tta else "off"}',
        f'- detector: {detector.name}, search tiles {search_tiles}, with nobody in view on '
        f'every {idle_search_every} frames'
        + (f' ({note})' if note else ''),
        f'- {frames} frames per scenario after {warmup} warm-up frames; frames of a real face '
        '(scikit-image astronaut, public domain) drifting over 60 frames, stamped at 30 fps',
        '',
        '| scenario | stage | p50 ms | p95 ms |',
        '|---|---|---:|---:|',
    ]
    for scenario, timings, total, cpu, faces in rows:
        for stage in STAGES:
            lines.append(f'| {scenario.name} | {stage} | {_pct(timings[stage], 50):.2f} | '
                         f'{_pct(timings[stage], 95):.2f} |')
        lines.append(f'| {scenario.name} | **whole frame** | **{_pct(total, 50):.2f}** | '
                     f'**{_pct(total, 95):.2f}** |')
        lines.append(f'| {scenario.name} | whole frame, CPU time of the thread | '
                     f'{_pct(cpu, 50):.2f} | {_pct(cpu, 95):.2f} |')
    lines += ['', '| scenario | throughput (frames/s, one thread) | faces reported per frame '
                  '(expected) | whole-frame max ms |', '|---|---:|---|---:|']
    for scenario, timings, total, cpu, faces in rows:
        counts = ', '.join(f'{n}: {c}' for n, c in zip(*np.unique(faces, return_counts=True)))
        lines.append(f'| {scenario.name} | {1e3 / total.mean():.0f} | {counts} '
                     f'({scenario.faces}) | {total.max():.1f} |')
    vga_total, vga_cpu = rows[0][2], rows[0][3]
    verdict = 'met' if _pct(vga_total, 95) <= GOAL_P95_MS else 'NOT met'
    lines += ['', f'Goal (whole-frame p95 <= {GOAL_P95_MS:.0f} ms, 640x480, one face): '
                  f'{verdict} on wall time ({_pct(vga_total, 95):.2f} ms; CPU time p95 '
                  f'{_pct(vga_cpu, 95):.2f} ms).']
    if memory is not None:
        before, after = memory
        lines += ['', f'Memory over {memory_frames} more frames of 640x480 (RSS): '
                      f'{before:.1f} MB after warm-up, {after:.1f} MB at the end '
                      f'({after - before:+.1f} MB).']
    lines += ['', 'First faces of each run are reported from the second frame on (the tracker '
                  'confirms a face on its second detection).', '']
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', action='append', dest='models',
                        help='model file (repeat for an ensemble); default: the installed '
                             f'{FACE_MODEL_FILE}')
    parser.add_argument('--detector', default=NODE_DEFAULTS['detector'], choices=DETECTORS)
    parser.add_argument('--search-tiles', type=int,
                        default=NODE_DEFAULTS['detector_search_tiles'])
    parser.add_argument('--idle-search-every', type=int,
                        default=NODE_DEFAULTS['detector_idle_search_every'])
    parser.add_argument('--runtime', default='auto', choices=('auto', 'tflite', 'keras'))
    parser.add_argument('--flip-tta', action='store_true')
    parser.add_argument('--frames', type=int, default=300)
    parser.add_argument('--warmup', type=int, default=30)
    parser.add_argument('--memory-frames', type=int, default=10000)
    parser.add_argument('--output', default='bench/results/face',
                        help='writes <output>.md, as the other benchmarks of make bench')
    args = parser.parse_args(argv)
    models = args.models or [resolve_model_path(FACE_MODEL_FILE)]
    try:
        table = benchmark(models, args.detector, args.search_tiles, args.idle_search_every,
                          args.runtime, args.flip_tta, args.frames, args.warmup,
                          args.memory_frames)
    except (OSError, RuntimeError, ValueError) as error:
        print(f'face_benchmark: {error}', file=sys.stderr)
        return 1
    output = Path(args.output).with_suffix('.md')
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table)
    print(table)
    print(f'written to {output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
