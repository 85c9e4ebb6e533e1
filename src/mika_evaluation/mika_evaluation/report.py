"""The evaluation report: JSON (everything), Markdown (the summary) and PNG figures."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_evaluation import metrics
from mika_evaluation.bag_format import label_at

SOURCES = ('face', 'voice', 'fused')


def _timeline_scores(times, truth: List[Optional[str]], predicted: List[Optional[str]]) -> Dict:
    pairs = [(EMOTION_LABELS.index(t), EMOTION_LABELS.index(p))
             for t, p in zip(truth, predicted) if t is not None and p is not None]
    labelled = sum(t is not None for t in truth)
    scores = metrics.classification_summary([a for a, _ in pairs], [b for _, b in pairs],
                                            EMOTION_LABELS)
    scores['accuracy_counting_no_state_as_wrong'] = (
        sum(a == b for a, b in pairs) / labelled if labelled else float('nan'))
    scores['coverage'] = metrics.coverage(truth, predicted)
    scores['flips_per_minute'] = metrics.flips_per_minute(times, truth, predicted)
    scores['reaction'] = metrics.reaction_times(times, truth, predicted)
    return scores


def _per_result_scores(log, modality: str) -> Dict:
    """Each result against the truth at its sensor time (voice: the utterance middle)."""
    truth, predicted = [], []
    for result in log.results:
        if result.modality != modality:
            continue
        at = (result.stamp + result.end_stamp) / 2 if modality == 'voice' else result.stamp
        label = label_at(log.truth, at)
        if label is not None:
            truth.append(EMOTION_LABELS.index(label))
            predicted.append(int(np.argmax(result.probabilities)))
    return metrics.classification_summary(truth, predicted, EMOTION_LABELS)


def build_report(log, timeline, params) -> Dict:
    truth = [label_at(log.truth, t) for t in timeline.times]
    per_source = {source: _timeline_scores(timeline.times, truth, timeline.labels[source])
                  for source in SOURCES}
    latency = {stage: metrics.latency_summary(values)
               for stage, values in sorted(log.stage_seconds.items())}
    latency['fusion.update'] = metrics.latency_summary(timeline.fusion_update_s)
    labelled_s = sum(i.duration for i in log.truth)
    return {
        'complete': True,  # written only after the whole bag was replayed
        'mode': log.mode, 'bag': log.bag, 'storage': log.storage,
        'duration_s': log.duration, 'labelled_s': labelled_s,
        'messages': log.messages, 'truth_source': log.truth_source,
        'truth_segments': len(log.truth),
        'params': params.source, 'fusion_parameters': params.fusion,
        'models': log.model_ids, 'media': {k: log.manifest[k] for k in (
            'face_source', 'voice_source', 'voice_speakers') if k in log.manifest},
        'notes': log.notes,
        'sample_rate_hz': float(1.0 / np.median(np.diff(timeline.times)))
        if len(timeline.times) > 1 else None,
        'summary': {source: {
            'accuracy': per_source[source]['accuracy'],
            'accuracy_counting_no_state_as_wrong':
                per_source[source]['accuracy_counting_no_state_as_wrong'],
            'macro_f1': per_source[source]['macro_f1'],
            'coverage': per_source[source]['coverage'],
            'flips_per_minute': per_source[source]['flips_per_minute'],
            'reaction_median_s': per_source[source]['reaction']['median_s']}
            for source in SOURCES},
        'timeline': per_source,
        'per_result': {m: _per_result_scores(log, m) for m in ('face', 'voice')},
        'latency': latency,
        'counters': log.counters,
        'fusion_rejected': timeline.rejected,
        'replay': {'wall_s': log.wall_s,
                   'real_time_factor': log.duration / log.wall_s if log.wall_s > 0 else None},
    }


def _fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return '-'
    return f'{value:.{digits}f}'


def markdown(report: Dict) -> str:
    lines = [f'# Evaluation of `{Path(report["bag"]).name}` ({report["mode"]})', '',
             f'Bag {report["bag"]} ({report["storage"]}), {report["duration_s"]:.1f} s, '
             f'{report["truth_segments"]} labelled segments ({report["labelled_s"]:.1f} s) from '
             f'{report["truth_source"]}; parameters: {report["params"]}; models: '
             + ', '.join(f'{k} `{v}`' for k, v in report['models'].items()) + '.', '']
    for key, value in report['media'].items():
        lines.append(f'- {key}: {value}')
    lines += ['', f'States sampled at the fusion publish rate '
              f'({_fmt(report["sample_rate_hz"], 1)} Hz) over the labelled time. Accuracy, '
              'macro-F1, MCC and kappa: over the samples with a state; coverage: share of '
              'labelled time with a state.', '',
              '| output | accuracy | acc. (no state = wrong) | macro-F1 | MCC | kappa | coverage '
              '| flips/min | reaction median (s) | reached |',
              '|---|---|---|---|---|---|---|---|---|---|']
    for source in SOURCES:
        s = report['timeline'][source]
        reaction = s['reaction']
        lines.append(
            f'| {source} | {_fmt(s["accuracy"])} | '
            f'{_fmt(s["accuracy_counting_no_state_as_wrong"])} '
            f'| {_fmt(s["macro_f1"])} | {_fmt(s["matthews_correlation"])} | '
            f'{_fmt(s["cohen_kappa"])} | {_fmt(s["coverage"], 2)} | '
            f'{_fmt(s["flips_per_minute"], 2)} | {_fmt(reaction["median_s"], 2)} | '
            f'{reaction["reached"]}/{reaction["changes"]} |')
    lines += ['', '## Per-class recall (timeline)', '',
              '| output | ' + ' | '.join(EMOTION_LABELS) + ' |',
              '|---|' + '---|' * len(EMOTION_LABELS)]
    for source in SOURCES:
        recall = report['timeline'][source]['per_class_recall']
        lines.append(f'| {source} | ' + ' | '.join(_fmt(recall[n], 2) for n in EMOTION_LABELS)
                     + ' |')
    lines += ['', '## Per result (each face frame / utterance against the truth at its time)',
              '', '| modality | results | accuracy | macro-F1 |', '|---|---|---|---|']
    for modality, s in report['per_result'].items():
        lines.append(f'| {modality} | {s["samples"]} | {_fmt(s["accuracy"])} | '
                     f'{_fmt(s["macro_f1"])} |')
    lines += ['', '## Latency per stage (this machine, measured during the replay)', '',
              '| stage | count | mean ms | p50 ms | p95 ms | max ms |', '|---|---|---|---|---|---|']
    for stage, s in report['latency'].items():
        if s['count']:
            lines.append(f'| {stage} | {s["count"]} | {_fmt(s["mean_ms"], 2)} | '
                         f'{_fmt(s["p50_ms"], 2)} | {_fmt(s["p95_ms"], 2)} | '
                         f'{_fmt(s["max_ms"], 2)} |')
    replay = report['replay']
    lines += ['', f'Replay: {replay["wall_s"]:.1f} s wall for {report["duration_s"]:.1f} s of '
              f'bag: {_fmt(replay["real_time_factor"], 2)}x real time.', '',
              'Counters: ' + ', '.join(f'{k} {v}' for k, v in sorted(report['counters'].items()))
              + '.', '']
    if report['fusion_rejected']:
        lines.append('Fusion rejected: ' + ', '.join(
            f'{k} {v}' for k, v in report['fusion_rejected'].items()) + '.')
    if report['notes']:
        lines += ['', 'Notes: ' + '; '.join(report['notes'])]
    lines += ['', '![confusion](confusion.png)', '', '![timeline](timeline.png)', '']
    return '\n'.join(lines)


def draw_confusion(axis, matrix, labels: Sequence[str], title: str,
                   cells: str = 'share') -> None:
    """One confusion matrix on a matplotlib ``axis`` (rows: truth), coloured by the share
    of each row; each non-empty cell shows its ``cells``: 'share' or 'count'."""
    matrix = np.asarray(matrix, float)
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    axis.imshow(shares, cmap='Blues', vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix[i, j]:
                axis.text(j, i, f'{shares[i, j]:.2f}' if cells == 'share' else int(matrix[i, j]),
                          ha='center', va='center', fontsize=7 if cells == 'share' else 8,
                          color='white' if shares[i, j] > 0.5 else 'black')
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha='right', fontsize=8)
    axis.set_yticks(range(len(labels)), labels, fontsize=8)
    axis.set_xlabel('predicted')
    axis.set_ylabel('true')
    axis.set_title(title, fontsize=9)


def plot_confusions(report: Dict, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for axis, source in zip(axes, SOURCES):
        timeline = report['timeline'][source]
        draw_confusion(axis, timeline['confusion_matrix'], EMOTION_LABELS,
                       f'{source}: accuracy {_fmt(timeline["accuracy"])}')
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_timeline(log, timeline, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    times = timeline.times - log.start
    figure, axis = plt.subplots(figsize=(14, 4))

    def level(labels):
        return np.array([np.nan if v is None else EMOTION_LABELS.index(v) for v in labels], float)
    truth = [label_at(log.truth, t) for t in timeline.times]
    axis.plot(times, level(truth), color='black', lw=6, alpha=0.25, label='truth',
              drawstyle='steps-post')
    for source, offset, style in (('face', -0.15, ':'), ('voice', 0.15, '--'),
                                  ('fused', 0.0, '-')):
        axis.plot(times, level(timeline.labels[source]) + offset, style, lw=1.4 if
                  source == 'fused' else 1.0, label=source, drawstyle='steps-post')
    axis.set_yticks(range(len(EMOTION_LABELS)), EMOTION_LABELS)
    axis.set_xlabel('bag time (s)')
    axis.set_xlim(0, times[-1] if len(times) else 1)
    axis.legend(loc='upper right', ncol=4, fontsize=8)
    axis.set_title('truth (grey band) against face, voice and fused states')
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def json_default(value):
    """``json.dumps(default=...)`` for numpy scalars and arrays in reports."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f'{type(value).__name__} is not JSON serialisable')


def write_report(report: Dict, log, timeline, output_dir: Path, plots: bool = True) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    if plots:
        plot_confusions(report, output_dir / 'confusion.png')
        plot_timeline(log, timeline, output_dir / 'timeline.png')
    (output_dir / 'report.md').write_text(markdown(report))
    # JSON last: its presence means the report is whole
    (output_dir / 'report.json').write_text(json.dumps(report, indent=1, default=json_default))
