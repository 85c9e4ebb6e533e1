"""Sweep the fusion parameters over one or more evaluation bags; write the chosen ones.

Each bag is replayed once through the face and voice cores (the expensive part); the
fusion core is then re-run on the recorded results for every combination of the grid, so a
sweep of hundreds of combinations takes seconds per bag. Each combination is scored on the
fused timeline of all bags together: accuracy (no state counted as wrong), flips per minute
inside constant-label stretches, and the median reaction time after a true change. The
chosen combination maximises ``accuracy - flip_cost * flips/min - reaction_cost * reaction
s`` among those that keep the steady-person promise of the fusion tests (at most one flip a
minute on a flickering steady face, a real change followed within 2 s: a few minutes of
bag cannot show flicker the scenarios do); the trade-off table lists the Pareto-optimal
ones. The output YAML is the input params file with the ``fusion_node`` section replaced:
the launch file accepts it as ``params_file:=``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import yaml

from mika_common.tensorflow_logging import quiet_tensorflow_start_up
from mika_evaluation import metrics
from mika_evaluation.bag_format import BagError, label_at
from mika_evaluation.node_config import (
    ConfigError, NodeParameters, fusion_config, resolve, section_keys)
from mika_evaluation.offline import fuse, load_replay, replay, save_replay

DEFAULT_GRID = {
    'voice_weight': [0.2, 0.35, 0.7, 1.0],
    'half_life_s': [0.5, 1.0, 2.0],
    'smoothing_time_constant_s': [0.2, 0.4, 0.8, 1.6],
    'switch_margin': [0.1, 0.2, 0.3],
    'min_dwell_s': [0.0, 0.15, 0.3],
}


def score_timeline(log, timeline) -> Dict:
    truth = [label_at(log.truth, t) for t in timeline.times]
    fused = timeline.labels['fused']
    labelled = [(t, p) for t, p in zip(truth, fused) if t is not None]
    reaction = metrics.reaction_times(timeline.times, truth, fused)
    return {'labelled': len(labelled), 'correct': sum(t == p for t, p in labelled),
            'covered': sum(p is not None for _, p in labelled),
            'flips_per_minute': metrics.flips_per_minute(timeline.times, truth, fused),
            'minutes': len(labelled) * float(np.median(np.diff(timeline.times))) / 60,
            'reaction': reaction}


def combine(scores: Sequence[Dict]) -> Dict:
    labelled = sum(s['labelled'] for s in scores)
    minutes = sum(s['minutes'] for s in scores)
    medians = [s['reaction']['median_s'] for s in scores if s['reaction']['median_s'] is not None]
    return {
        'accuracy': sum(s['correct'] for s in scores) / labelled,
        'coverage': sum(s['covered'] for s in scores) / labelled,
        'flips_per_minute': sum(s['flips_per_minute'] * s['minutes'] for s in scores) / minutes,
        'reaction_median_s': float(np.mean(medians)) if medians else float('inf'),
        'reaction_missed': sum(s['reaction']['missed'] for s in scores),
    }


def pareto(rows: List[Dict]) -> List[Dict]:
    """Rows no other row beats on all of accuracy (up), flips and reaction (down)."""
    def dominated(a, b):
        better_or_equal = (b['accuracy'] >= a['accuracy'] and
                           b['flips_per_minute'] <= a['flips_per_minute'] and
                           b['reaction_median_s'] <= a['reaction_median_s'])
        strictly = (b['accuracy'] > a['accuracy'] or b['flips_per_minute'] <
                    a['flips_per_minute'] or b['reaction_median_s'] < a['reaction_median_s'])
        return better_or_equal and strictly
    return [a for a in rows if not any(dominated(a, b) for b in rows)]


def sweep(logs, base_fusion: Dict, grid: Dict[str, List], flip_cost: float,
          reaction_cost: float) -> List[Dict]:
    names = list(grid)
    rows = []
    for values in itertools.product(*(grid[n] for n in names)):
        candidate = {**base_fusion, **dict(zip(names, values))}
        try:
            candidate = resolve('fusion_node', candidate)
            fusion_config(candidate)
        except ConfigError:
            continue  # a combination the node would refuse
        result = combine([score_timeline(log, fuse(log, candidate)) for log in logs])
        result['score'] = (result['accuracy'] - flip_cost * result['flips_per_minute']
                           - reaction_cost * min(result['reaction_median_s'], 60.0))
        result['parameters'] = dict(zip(names, values))
        rows.append(result)
    rows.sort(key=lambda r: -r['score'])
    return rows


def choose_stable(rows: List[Dict], base_fusion: Dict) -> Optional[Dict]:
    """The best scoring row whose parameters keep the steady-person promise
    (:func:`mika_fusion.scenarios.stability_problem`): a bag of a few minutes cannot show
    that a lighter debounce makes a steady face flicker, the scenarios do. Rows are checked
    in score order up to the chosen one; each checked row gets ``instability`` (None when
    it passes)."""
    from mika_fusion.scenarios import stability_problem
    for row in rows:
        row['instability'] = stability_problem(
            fusion_config(resolve('fusion_node', {**base_fusion, **row['parameters']})))
        if row['instability'] is None:
            return row
    return None


def write_params(base_file: Optional[Path], fusion_values: Dict, output: Path,
                 note: str) -> None:
    document = {}
    if base_file is not None:
        document = yaml.safe_load(Path(base_file).read_text()) or {}
    own = [k for k in section_keys(document, 'fusion_node') if k not in ('/**', '**')]
    key = own[-1] if own else '/**/fusion_node'
    document.setdefault(key, {}).setdefault('ros__parameters', {}).update(fusion_values)
    output.write_text(f'# {note}\n' + yaml.safe_dump(document, sort_keys=False))


def parse_grid(items: Sequence[str]) -> Dict[str, List]:
    grid = dict(DEFAULT_GRID) if not items else {}
    for item in items:
        name, _, values = item.partition('=')
        if not values:
            raise ValueError(f'--grid {item!r}: expected name=v1,v2,...')
        grid[name] = [yaml.safe_load(v) for v in values.split(',')]
    return grid


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('bags', nargs='*', type=Path)
    parser.add_argument('--replays', nargs='*', type=Path, default=[],
                        help='replays kept by --save-replays (or heldout): tuned on without '
                             'replaying')
    parser.add_argument('--save-replays', type=Path, default=None,
                        help='folder to keep each bag\'s replay in (<bag name>.pkl)')
    parser.add_argument('--params', type=Path, default=None, help='base params YAML')
    parser.add_argument('--output', type=Path, required=True,
                        help='params YAML to write (the base with fusion_node tuned)')
    parser.add_argument('--table', type=Path, default=None,
                        help='sweep results (.json and .md beside it); default '
                             '<output>.sweep.json/.md')
    parser.add_argument('--grid', action='append', default=[],
                        help='name=v1,v2,... (repeat); default sweeps '
                             + ', '.join(DEFAULT_GRID))
    parser.add_argument('--flip-cost', type=float, default=0.01,
                        help='accuracy given up per flip/min (default 0.01)')
    parser.add_argument('--reaction-cost', type=float, default=0.02,
                        help='accuracy given up per second of median reaction (default 0.02)')
    parser.add_argument('--face-model', action='append', default=None)
    parser.add_argument('--voice-model', default=None)
    args = parser.parse_args(argv)
    if not args.bags and not args.replays:
        parser.error('give bags to replay, --replays, or both')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    quiet_tensorflow_start_up()
    args = parse_args(argv)
    try:
        grid = parse_grid(args.grid)
        params = NodeParameters.load(args.params)
        started = time.perf_counter()
        logs = [replay(bag, params, None, args.face_model, args.voice_model)
                for bag in args.bags]
        if args.save_replays is not None:
            args.save_replays.mkdir(parents=True, exist_ok=True)
            for bag, log in zip(args.bags, logs):
                save_replay(log, args.save_replays / f'{bag.name}.pkl')
        logs += [load_replay(path) for path in args.replays]
        replayed = time.perf_counter() - started
        rows = sweep(logs, params.fusion, grid, args.flip_cost, args.reaction_cost)
    except (BagError, ConfigError, ValueError, RuntimeError) as error:
        print(f'tune_fusion: {error}', file=sys.stderr)
        return 2
    if not rows:
        print('tune_fusion: no valid combination in the grid', file=sys.stderr)
        return 2
    baseline = combine([score_timeline(log, fuse(log, params.fusion)) for log in logs])
    best = choose_stable(rows, params.fusion)
    if best is None:
        print('tune_fusion: no combination of the grid keeps the steady-person promise '
              f'({rows[0]["instability"]} for the best scoring one); widen the grid',
              file=sys.stderr)
        return 2
    chosen = {**params.fusion, **best['parameters']}
    write_params(args.params, chosen, args.output,
                 f'tune_fusion on {", ".join(str(b) for b in args.bags + args.replays)}: '
                 f'fused accuracy '
                 f'{best["accuracy"]:.3f}, {best["flips_per_minute"]:.2f} flips/min, reaction '
                 f'{best["reaction_median_s"]:.2f} s (base parameters: {baseline["accuracy"]:.3f}, '
                 f'{baseline["flips_per_minute"]:.2f} flips/min, '
                 f'{baseline["reaction_median_s"]:.2f} s)')
    table = args.table or args.output.with_suffix('.sweep.json')
    front = pareto(rows)
    table.write_text(json.dumps({'baseline': baseline, 'grid': grid, 'rows': rows,
                                 'pareto': front, 'replay_s': replayed}, indent=1))
    lines = ['| score | accuracy | coverage | flips/min | reaction s | ' + ' | '.join(grid) + ' |',
             '|---|---|---|---|---|' + '---|' * len(grid)]
    for row in front[:20]:
        lines.append(f'| {row["score"]:.3f} | {row["accuracy"]:.3f} | {row["coverage"]:.2f} | '
                     f'{row["flips_per_minute"]:.2f} | {row["reaction_median_s"]:.2f} | '
                     + ' | '.join(str(row['parameters'][n]) for n in grid) + ' |')
    table.with_suffix('.md').write_text(
        f'Base parameters: accuracy {baseline["accuracy"]:.3f}, '
        f'{baseline["flips_per_minute"]:.2f} flips/min, reaction '
        f'{baseline["reaction_median_s"]:.2f} s.\n\nPareto front (best score first):\n\n'
        + '\n'.join(lines) + '\n')
    passed_over = [r for r in rows if r.get('instability')]
    if passed_over:
        print(f'{len(passed_over)} better scoring combinations break the steady-person '
              f'promise and were passed over (the first: {passed_over[0]["instability"]})')
    print(f'{len(rows)} combinations; chosen {best["parameters"]}: accuracy '
          f'{best["accuracy"]:.3f} (base {baseline["accuracy"]:.3f}), flips/min '
          f'{best["flips_per_minute"]:.2f} (base {baseline["flips_per_minute"]:.2f}); '
          f'written {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
