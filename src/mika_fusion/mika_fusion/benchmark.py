"""Time per fusion update: validate a face and a voice result, add them, compute the state.

    python -m mika_fusion.benchmark --output bench/results/fusion

writes ``fusion.md`` and ``fusion.json``. Goal: p99 under 0.2 ms on the project's 2-core
reference machine.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_fusion.fusion import FACE, VOICE, EmotionFuser, FusionConfig, make_observation

GOAL_P99_MS = 0.2


def measure(updates: int, seed: int = 0) -> np.ndarray:
    """Seconds per update for ``updates`` updates at 30 Hz of simulated sensor time."""
    rng = np.random.default_rng(seed)
    config = FusionConfig()
    fuser = EmotionFuser(config)
    faces = rng.dirichlet(np.ones(7), size=updates)
    voices = rng.dirichlet(np.ones(7), size=updates)
    timings = np.empty(updates)
    for index in range(updates):
        now = 1000.0 + index / 30.0
        start = time.perf_counter()
        for modality, probabilities in ((FACE, faces[index]), (VOICE, voices[index])):
            fuser.add(make_observation(modality, now - 0.05, EMOTION_LABELS, probabilities,
                                       float(probabilities.max()), now, config,
                                       track_id=index % 3, area=100.0))
        fuser.update(now)
        timings[index] = time.perf_counter() - start
    return timings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--output', default='bench/results/fusion',
                        help='path prefix of the .md and .json results')
    parser.add_argument('--updates', type=int, default=20000)
    options = parser.parse_args(argv)
    measure(500)  # warm-up
    timings_ms = measure(options.updates) * 1e3
    p50, p95, p99, worst = np.percentile(timings_ms, [50, 95, 99, 100])
    result = {'updates': options.updates, 'p50_ms': p50, 'p95_ms': p95, 'p99_ms': p99,
              'max_ms': worst, 'goal_p99_ms': GOAL_P99_MS, 'meets_goal': bool(p99 < GOAL_P99_MS),
              'machine': f'{platform.processor() or platform.machine()}, '
                         f'python {platform.python_version()}'}
    output = pathlib.Path(options.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix('.json').write_text(json.dumps(result, indent=2) + '\n')
    table = ('# Fusion core: time per update\n\n'
             'One update = validate a face and a voice result, add both, compute the state.\n\n'
             '| updates | p50 ms | p95 ms | p99 ms | max ms | goal p99 |\n'
             '|---|---|---|---|---|---|\n'
             f'| {options.updates} | {p50:.4f} | {p95:.4f} | {p99:.4f} | {worst:.3f} | '
             f'< {GOAL_P99_MS} ms: {"met" if result["meets_goal"] else "NOT met"} |\n\n'
             f'Machine: {result["machine"]}.\n')
    output.with_suffix('.md').write_text(table)
    print(table)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
