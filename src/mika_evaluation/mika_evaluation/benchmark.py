"""Offline evaluation benchmark: how fast a bag replays, what each stage costs, and the
fused output against each single modality. Writes Markdown and JSON.

    python -m mika_evaluation.benchmark --output bench/results/evaluation

builds a 30 FPS 640x480 camera + 16 kHz audio bag from the shared data (FER-2013
``private_test`` faces; voices of a corpus the voice model never heard: EmoDB for the
shipped model, which is trained on RAVDESS), replays it once through the face and voice
cores (:func:`mika_evaluation.offline.replay`) on one core, fuses with the params file (and
``--tuned-params`` beside it) and scores the three outputs. Goal: at least 5x real time.

Real-time factor = bag duration / replay time of the message loop (model loading excluded).
On a shared machine the wall clock includes time the OS gives to other processes, so the
process's CPU time is reported beside it with the load average. A voice model trained on
some corpus speakers (``train_voice --exclude-speakers``) is tested on the others with
``--voice-model M --voice-corpus .../ravdess --speakers ravdess_17 ...``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from mika_common.workspace import repository_root, shared_data_dir

GOAL_REAL_TIME_FACTOR = 5.0
OUTPUT_COLUMNS = ('accuracy', 'accuracy_counting_no_state_as_wrong', 'macro_f1', 'coverage',
                  'flips_per_minute', 'reaction_median_s')


def default_params_file() -> Path:
    """The launch file's params YAML: installed with mika_bringup, else the source tree's."""
    try:
        from ament_index_python.packages import (
            PackageNotFoundError, get_package_share_directory)
        try:
            return Path(get_package_share_directory('mika_bringup')) / 'config' / 'perception.yaml'
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return repository_root() / 'config' / 'perception.yaml'


def build_bag(args, work_dir: Path) -> Path:
    from mika_evaluation.bag_builder import FaceSource, LayoutConfig, VoiceSource, build
    data = Path(args.data_dir)
    bag = work_dir / 'benchmark_bag'
    faces = FaceSource.from_fer2013(data / 'fer2013' / 'fer2013.npz', args.fer_split)
    voices = VoiceSource.from_corpus(Path(args.voice_corpus or data / 'emodb'), args.speakers)
    build(bag, faces, voices, LayoutConfig(segments=args.segments, fps=args.fps,
                                           seed=args.seed), 'mcap')
    return bag


def stage_costs(log) -> List[Dict]:
    """Per stage: calls, p50/p95 per call, and compute per second of bag (sums to the
    replay's cost; ``face.total`` and its parts overlap)."""
    import numpy as np
    rows = []
    for stage, seconds in sorted(log.stage_seconds.items()):
        values = np.asarray(seconds) * 1e3
        rows.append({'stage': stage, 'calls': int(values.size),
                     'p50_ms': float(np.percentile(values, 50)),
                     'p95_ms': float(np.percentile(values, 95)),
                     'ms_per_bag_s': float(values.sum() / log.duration)})
    return rows


def voice_speakers_seen(voice_model: Optional[str], params, bag_speakers: Sequence[str]
                        ) -> List[str]:
    """The bag's speakers that the voice model's metadata lists among its training
    speakers (models written by train_voice record them)."""
    from mika_voice.voice_model import read_metadata
    from mika_voice.voice_parameters import default_model_path
    path = voice_model or params.voice.get('model_path') or default_model_path()
    trained_on = set(read_metadata(path).training.get('speakers', []))
    return sorted(trained_on & set(bag_speakers))


def markdown(result: Dict) -> str:
    replay, bag = result['replay'], result['bag']
    lines = [
        '# Offline evaluation: replay speed and fused vs single modality', '',
        f'Command: `{result["command"]}`', '',
        f'Bag: {bag["duration_s"]:.1f} s, {bag["frames"]} frames 640x480 bgr8 at '
        f'{bag["fps"]:g} FPS, 16 kHz S16LE audio in 100 ms chunks, {bag["segments"]} '
        f'labelled segments; faces: {bag["face_source"]}; voices: {bag["voice_source"]}.',
        f'Models: face `{result["models"]["face"]}`, voice `{result["models"]["voice"]}`.',
        f'Parameters: {result["params"]}.', '']
    if result['voice_speakers_seen']:
        lines += [f'**The voice model was trained on speakers of this bag '
                  f'({", ".join(result["voice_speakers_seen"])}): its figures are not '
                  'held-out figures.**', '']
    lines += [
        '## Replay speed', '',
        f'{result["cores"]}; load average {result["load_average"][0]:.2f} before, '
        f'{result["load_average"][1]:.2f} after. Goal: at least {GOAL_REAL_TIME_FACTOR:g}x '
        'real time.', '',
        '| measure | replay s | real-time factor |', '|---|---|---|',
        f'| wall clock | {replay["wall_s"]:.1f} | {replay["real_time_factor_wall"]:.2f}x |',
        f'| process CPU time | {replay["cpu_s"]:.1f} | {replay["real_time_factor_cpu"]:.2f}x |',
        '', f'Model loading and warm-up before the loop: {replay["setup_s"]:.1f} s. '
        f'Building the bag: {result["build_s"]:.1f} s.', '',
        '## Cost per stage (wall clock, measured during the replay)', '',
        '| stage | calls | p50 ms | p95 ms | ms per s of bag |', '|---|---|---|---|---|']
    for row in result['stages']:
        lines.append(f'| {row["stage"]} | {row["calls"]} | {row["p50_ms"]:.2f} | '
                     f'{row["p95_ms"]:.2f} | {row["ms_per_bag_s"]:.1f} |')
    lines += ['', '`face.total` is the sum of the face stages; `bag.read` and '
              '`bag.deserialize` count every message (frames, audio chunks, labels). '
              f'A replay at {GOAL_REAL_TIME_FACTOR:g}x real time has '
              f'{1000 / GOAL_REAL_TIME_FACTOR:.0f} ms per second of bag.', '',
              '## Fused vs single modality', '',
              'States sampled at the fusion publish rate over the labelled time; accuracy over '
              'the samples with a state; flips per minute inside constant-label stretches.', '',
              '| output | accuracy | acc. (no state = wrong) | macro-F1 | coverage | flips/min '
              '| reaction median s |', '|---|---|---|---|---|---|---|']
    for name, row in result['outputs'].items():
        values = [row[c] for c in OUTPUT_COLUMNS]
        lines.append(f'| {name} | ' + ' | '.join(
            '-' if v is None else f'{v:.3f}' if i < 3 else f'{v:.2f}'
            for i, v in enumerate(values)) + ' |')
    for name, values in result['fusion_parameters'].items():
        lines += ['', f'{name}: ' + ', '.join(f'{k} {v}' for k, v in sorted(values.items()))]
    lines += ['', f'Machine: {result["machine"]}.', '']
    return '\n'.join(lines)


def run(args) -> Dict:
    from mika_voice.benchmark import pin_to_one_core
    cores = pin_to_one_core() if not args.all_cores else f'all {os.cpu_count()} cores'
    from mika_evaluation.node_config import NodeParameters
    from mika_evaluation.offline import fuse, replay
    from mika_evaluation.report import build_report

    params = NodeParameters.load(args.params)
    tuned = NodeParameters.load(args.tuned_params) if args.tuned_params else None
    work_dir = None if args.bag else Path(tempfile.mkdtemp(prefix='mika_eval_bench_',
                                                           dir=args.work_dir))
    try:
        started = time.perf_counter()
        bag = Path(args.bag) if work_dir is None else build_bag(args, work_dir)
        build_s = 0.0 if work_dir is None else time.perf_counter() - started
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        log = replay(bag, params, face_models=args.face_model, voice_model=args.voice_model)
        total_s = time.perf_counter() - started
        load_after = os.getloadavg()[0]
    finally:
        if work_dir is not None and not args.keep_bag:
            shutil.rmtree(work_dir, ignore_errors=True)
    report = build_report(log, fuse(log, params.fusion), params)
    outputs = {name: {c: report['summary'][name][c] for c in OUTPUT_COLUMNS}
               for name in ('face', 'voice', 'fused')}
    fusion_parameters = {'fused': params.fusion}
    if tuned is not None:
        tuned_report = build_report(log, fuse(log, tuned.fusion), tuned)
        outputs['fused (tuned)'] = {c: tuned_report['summary']['fused'][c]
                                    for c in OUTPUT_COLUMNS}
        fusion_parameters['fused (tuned)'] = tuned.fusion
    manifest = log.manifest
    return {
        'command': 'python -m mika_evaluation.benchmark ' + ' '.join(sys.argv[1:]),
        'goal_real_time_factor': GOAL_REAL_TIME_FACTOR,
        'bag': {'path': str(bag) if args.bag or args.keep_bag else '(temporary, removed)',
                'duration_s': log.duration, 'frames': log.counters.get('frames', 0),
                'fps': manifest.get('fps', 0.0), 'segments': len(log.truth),
                'face_source': manifest.get('face_source', '?'),
                'voice_source': manifest.get('voice_source', '?')},
        'models': log.model_ids, 'params': params.source,
        'voice_speakers_seen': voice_speakers_seen(args.voice_model, params,
                                                   manifest.get('voice_speakers', [])),
        'cores': cores, 'load_average': [load_before, load_after], 'build_s': build_s,
        'replay': {'wall_s': log.wall_s, 'cpu_s': log.cpu_s, 'setup_s': total_s - log.wall_s,
                   'real_time_factor_wall': log.duration / log.wall_s,
                   'real_time_factor_cpu': log.duration / log.cpu_s},
        'stages': stage_costs(log), 'counters': log.counters,
        'outputs': outputs, 'fusion_parameters': fusion_parameters,
        'machine': f'{platform.machine()}, {os.cpu_count()} CPUs, '
                   f'python {platform.python_version()}',
    }


def add_bag_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how a bag is built and replayed (shared with heldout)."""
    parser.add_argument('--params', type=Path, default=default_params_file(),
                        help='params YAML of the launch file')
    parser.add_argument('--data-dir', default=str(shared_data_dir()),
                        help='shared data (default $MIKA_DATA or <repo>/../shared/data)')
    parser.add_argument('--voice-corpus', default=None,
                        help='corpus folder with labels.csv (default <data-dir>/emodb)')
    parser.add_argument('--speakers', nargs='*', default=None,
                        help='only these speakers (those the voice model never heard)')
    parser.add_argument('--fer-split', default='private_test')
    parser.add_argument('--segments', type=int, default=12)
    parser.add_argument('--fps', type=float, default=30.0)
    parser.add_argument('--face-model', action='append', default=None)
    parser.add_argument('--voice-model', default=None)
    parser.add_argument('--work-dir', default=None,
                        help='where temporary bags are built (default the system temp)')


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--output', default='bench/results/evaluation',
                        help='path prefix of the .md and .json results')
    parser.add_argument('--tuned-params', type=Path, default=None,
                        help='a second params file (tune_fusion output): its fusion_node '
                             'section gives a "fused (tuned)" row')
    parser.add_argument('--bag', default=None, help='replay this bag instead of building one')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--keep-bag', action='store_true')
    parser.add_argument('--all-cores', action='store_true',
                        help='do not pin the process to one core')
    add_bag_options(parser)
    return parser.parse_args(argv)


def run_and_write(command: str, run_fn, markdown_fn, args) -> int:
    """``run_fn(args)``, then ``<output>.json`` and ``.md`` written and the Markdown printed;
    exit status 2 with the reason when a bag, the params or a model cannot be used."""
    from mika_evaluation.bag_format import BagError
    from mika_evaluation.node_config import ConfigError
    try:
        result = run_fn(args)
    except (BagError, ConfigError, ValueError, OSError, RuntimeError) as error:
        print(f'{command}: {error}', file=sys.stderr)
        return 2
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix('.json').write_text(json.dumps(result, indent=1, default=str) + '\n')
    text = markdown_fn(result)
    output.with_suffix('.md').write_text(text)
    print(text)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_and_write('mika_evaluation.benchmark', run, markdown, parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
