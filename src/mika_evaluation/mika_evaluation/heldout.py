"""Fused against each single modality over several held-out bags, with an interval.

One evaluation bag of 24 segments is a small sample: four bags built the same way from
different draws of the same held-out faces and voices put the fused output anywhere from
10 points below to 10 points above the face. This command builds bags from several seeds
(or takes existing bags), replays each once through the nodes' core code, fuses with the
params file and reports per bag, pooled over all labelled segments, and a bootstrap
interval over segments for "fused minus face" and "fused minus voice", so that a claim
about the fusion rests on more than one draw.

    python -m mika_evaluation.heldout --seeds 12 13 14 15 \\
        --voice-corpus $MIKA_DATA/ravdess --speakers ravdess_17 ravdess_18 ravdess_19 ravdess_20 \\
        --voice-model /tmp/voice_ravdess01-14.keras --output bench/results/evaluation_heldout_bags

``--save-replays DIR`` keeps each replay; ``--replays DIR/seed_12.pkl ...`` fuses kept
replays again with another params file in seconds, without rebuilding or replaying. The
voice breakdown says how much of voice's low score over time is the wait for a segment's
first utterance and the validity window, and how much the model (each result against its
segment's label).

Accuracy here counts a moment without a state as wrong, so a modality cannot gain by
staying silent; flips are counted inside constant-label stretches as in the report.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from mika_evaluation.benchmark import add_bag_options, build_bag, run_and_write
from mika_evaluation.metrics import bootstrap_interval, flips_in_stretch

SOURCES = ('face', 'voice', 'fused')


def segment_rows(bag_name: str, log, timeline) -> List[Dict]:
    """One row per labelled segment: ticks, correct ticks and flips of each output, and
    the voice breakdown of :func:`voice_rows`."""
    rows = []
    voice = sorted((r for r in log.results if r.modality == 'voice'), key=lambda r: r.arrival)
    held = held_labels(voice, timeline.times)
    for interval in log.truth:
        inside = [i for i, t in enumerate(timeline.times) if interval.start <= t < interval.end]
        if not inside:
            continue
        row = {'bag': bag_name, 'label': interval.label, 'ticks': len(inside),
               'seconds': float(interval.end - interval.start)}
        for source in SOURCES:
            predicted = [timeline.labels[source][i] for i in inside]
            row[f'{source}_correct'] = sum(p == interval.label for p in predicted)
            row[f'{source}_flips'] = flips_in_stretch(predicted, interval.label)
        row.update(voice_rows(interval, voice, inside, timeline, held))
        rows.append(row)
    return rows


def held_labels(voice: Sequence, times) -> List[Optional[str]]:
    """At each tick, the label of the newest voice result by then, held until the next
    (no validity window)."""
    labels, index, current = [], 0, None
    for tick in times:
        while index < len(voice) and voice[index].arrival <= tick:
            current, index = voice[index].label, index + 1
        labels.append(current)
    return labels


def voice_rows(interval, voice: Sequence, inside: Sequence[int], timeline,
               held: Sequence[Optional[str]]) -> Dict:
    """Why voice scores lower over time than per utterance: the ticks before the first
    result of an utterance begun in this segment (nothing of this segment heard yet), the
    voice state's and the held result's correct ticks after it, and each utterance
    (middle inside the segment) against the segment's label."""
    first = next((r.arrival for r in voice if r.stamp >= interval.start
                  and interval.start <= r.arrival < interval.end), interval.end)
    after = [i for i in inside if timeline.times[i] >= first]
    heard = [r for r in voice if interval.start <= (r.stamp + r.end_stamp) / 2 < interval.end]
    return {'voice_wait_ticks': len(inside) - len(after), 'voice_after_ticks': len(after),
            'voice_after_correct': sum(timeline.labels['voice'][i] == interval.label
                                       for i in after),
            'voice_held_after_correct': sum(held[i] == interval.label for i in after),
            'utterances': len(heard),
            'utterances_correct': sum(r.label == interval.label for r in heard)}


def voice_breakdown(rows: Sequence[Dict]) -> Dict[str, float]:
    """Pooled :func:`voice_rows`: how much of the gap between voice over time and per
    utterance is the metric (waiting for the first utterance, the validity window) and
    how much the model."""
    ticks = sum(r['ticks'] for r in rows)
    after = sum(r['voice_after_ticks'] for r in rows)
    utterances = sum(r['utterances'] for r in rows)
    return {'over_time': sum(r['voice_correct'] for r in rows) / ticks,
            'waiting_share': 1.0 - after / ticks,
            'after_first_result': sum(r['voice_after_correct'] for r in rows) / after,
            'held_after_first_result': sum(r['voice_held_after_correct'] for r in rows) / after,
            'utterances': utterances,
            'per_utterance': sum(r['utterances_correct'] for r in rows) / utterances}


def pooled(rows: Sequence[Dict]) -> Dict[str, Dict[str, float]]:
    ticks = sum(r['ticks'] for r in rows)
    minutes = sum(r['seconds'] for r in rows) / 60.0
    return {source: {'accuracy': sum(r[f'{source}_correct'] for r in rows) / ticks,
                     'flips_per_minute': sum(r[f'{source}_flips'] for r in rows) / minutes}
            for source in SOURCES}


def accuracy_lead(rows: Sequence[Dict], source: str, over: str) -> float:
    """Pooled accuracy of ``source`` minus that of ``over``."""
    scores = pooled(rows)
    return scores[source]['accuracy'] - scores[over]['accuracy']


def compare(rows: Sequence[Dict], rounds: int = 2000) -> Dict:
    """Per bag and pooled scores; bootstrap intervals of the fused lead over segments."""
    bags = sorted({r['bag'] for r in rows})
    return {
        'segments': len(rows),
        'per_bag': {bag: pooled([r for r in rows if r['bag'] == bag]) for bag in bags},
        'pooled': pooled(rows),
        'voice_breakdown': voice_breakdown(rows),
        'fused_lead': {
            other: {'pooled': accuracy_lead(rows, 'fused', other),
                    'interval_95': bootstrap_interval(
                        lambda sample, other=other: accuracy_lead(sample, 'fused', other),
                        list(rows), rounds)}
            for other in ('face', 'voice')},
    }


def markdown(result: Dict) -> str:
    lines = [
        '# Fused against single modalities over several held-out bags', '',
        f'Command: `{result["command"]}`', '',
        f'Bags: {result["bag_description"]}', '',
        f'Models: face `{result["models"].get("face", "?")}`, voice '
        f'`{result["models"].get("voice", "?")}`. Parameters: {result["params"]}.', '',
        'Accuracy over labelled time, a moment without a state counted as wrong; flips per '
        'minute inside constant-label stretches.', '',
        '| bag | segments | face acc. | voice acc. | fused acc. | face flips/min | '
        'voice flips/min | fused flips/min |',
        '|---|---|---|---|---|---|---|---|']
    comparison = result['comparison']
    for bag, scores in [*comparison['per_bag'].items(), ('**pooled**', comparison['pooled'])]:
        count = result['segments_per_bag'].get(bag, comparison['segments'])
        lines.append(f'| {bag} | {count} | ' + ' | '.join(
            f'{scores[s]["accuracy"]:.3f}' for s in SOURCES) + ' | ' + ' | '.join(
            f'{scores[s]["flips_per_minute"]:.2f}' for s in SOURCES) + ' |')
    lines += ['', '| fused minus | pooled | 95% bootstrap interval over segments |',
              '|---|---|---|']
    for other, lead in comparison['fused_lead'].items():
        low, high = lead['interval_95']
        lines.append(f'| {other} | {lead["pooled"]:+.3f} | {low:+.3f} to {high:+.3f} |')
    voice = comparison['voice_breakdown']
    lines += ['', 'Voice over time against per utterance (pooled): the segment\'s first '
              f'{voice["waiting_share"]:.0%} of labelled time passes before a result of an '
              'utterance begun in it; after that the voice state is right '
              f'{voice["after_first_result"]:.3f} of the time '
              f'({voice["held_after_first_result"]:.3f} holding each result until the next, '
              'with no validity window); each of the '
              f'{voice["utterances"]} voice results (utterances and running windows) against '
              'its segment\'s label: '
              f'{voice["per_utterance"]:.3f}.']
    fusion = ', '.join(f'{k} {v}' for k, v in sorted(result['fusion'].items()))
    lines += ['', f'Fusion parameters: {fusion}.', '']
    return '\n'.join(lines)


def media_of(manifest: Dict) -> str:
    """What a built bag shows and plays, from its manifest ('' when it has none)."""
    if not manifest:
        return ''
    return (f'{manifest.get("face_source", "?")}; voices of {manifest.get("voice_source", "?")}'
            f', {manifest.get("fps", "?")} FPS')


def run(args) -> Dict:
    from mika_evaluation.node_config import NodeParameters
    from mika_evaluation.offline import fuse, load_replay, replay, save_replay
    params = NodeParameters.load(args.params)
    rows: List[Dict] = []
    models: Dict[str, str] = {}
    descriptions = []
    media = set()
    sources = ([('bag', Path(bag)) for bag in args.bags] + [('seed', s) for s in args.seeds]
               + [('replay', Path(r)) for r in args.replays])
    for kind, source in sources:
        work_dir = Path(tempfile.mkdtemp(prefix='mika_heldout_', dir=args.work_dir)) \
            if kind == 'seed' else None
        try:
            if kind == 'replay':
                log, name = load_replay(source), source.stem.replace('_', ' ')
            else:
                if kind == 'seed':
                    bag = build_bag(argparse.Namespace(**{**vars(args), 'seed': source}),
                                    work_dir)
                    name = f'seed {source}'
                else:
                    bag, name = source, source.name
                print(f'[heldout] replaying {name}', flush=True)
                log = replay(bag, params, face_models=args.face_model,
                             voice_model=args.voice_model)
                if args.save_replays is not None:
                    args.save_replays.mkdir(parents=True, exist_ok=True)
                    save_replay(log, args.save_replays / (name.replace(' ', '_') + '.pkl'))
        finally:
            if work_dir is not None:
                shutil.rmtree(work_dir, ignore_errors=True)
        models = log.model_ids
        descriptions.append(f'{name}: {log.duration:.1f} s, {len(log.truth)} segments')
        media.add(media_of(log.manifest))
        rows += segment_rows(name, log, fuse(log, params.fusion))
    manifest_note = '; '.join(sorted(m for m in media if m)) or 'bags without a manifest'
    return {
        'command': 'python -m mika_evaluation.heldout ' + ' '.join(sys.argv[1:]),
        'bag_description': '; '.join(descriptions) + f' ({manifest_note})',
        'segments_per_bag': {bag: sum(r['bag'] == bag for r in rows)
                             for bag in {r['bag'] for r in rows}},
        'models': models, 'params': str(params.source), 'fusion': params.fusion,
        'comparison': compare(rows, args.rounds), 'segments': rows,
    }


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--output', default='bench/results/evaluation_heldout_bags',
                        help='path prefix of the .md and .json results')
    parser.add_argument('--seeds', type=int, nargs='*', default=[],
                        help='build one bag per seed (removed after its replay)')
    parser.add_argument('--bags', nargs='*', default=[], help='existing bags to replay')
    parser.add_argument('--save-replays', type=Path, default=None,
                        help='folder to keep each replay in (<name>.pkl), for --replays')
    parser.add_argument('--replays', nargs='*', default=[],
                        help='replays kept by --save-replays: fuse again with --params '
                             'without replaying (their models are those of the replay)')
    parser.add_argument('--rounds', type=int, default=2000, help='bootstrap resamples')
    add_bag_options(parser)
    args = parser.parse_args(argv)
    if not args.seeds and not args.bags and not args.replays:
        parser.error('give --seeds to build bags, --bags to replay existing ones or '
                     '--replays to fuse kept replays again')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    from mika_common.tensorflow_logging import quiet_tensorflow_start_up
    quiet_tensorflow_start_up()
    return run_and_write('mika_evaluation.heldout', run, markdown, parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
