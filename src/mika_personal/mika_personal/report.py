"""Generic versus personal model on a person's held-out sessions, for either modality.

ROS-free. :func:`compare` takes the true labels and the two models' probabilities for the
same held-out samples and writes, side by side, accuracy, macro-F1, per-class recall and
the confusion matrices (``<name>.json``, ``<name>.md``, ``<name>_confusion.png``). Scores
come from :mod:`mika_evaluation.metrics`, as every other evaluation of the project.

A few dozen held-out samples decide little: the report adds McNemar's exact test on the
samples one model gets right and the other wrong, so a gain of a few points is not read as
an improvement when it could be chance.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_evaluation.metrics import classification_summary
from mika_evaluation.report import draw_confusion, json_default

MODELS = ('generic', 'personal')


def label_indices(y_true: Sequence, labels: Sequence[str]) -> np.ndarray:
    """Truth as indices into ``labels``; accepts label names or indices."""
    values = np.asarray(y_true)
    if values.dtype.kind in 'US':
        unknown = sorted(set(values.tolist()) - set(labels))
        if unknown:
            raise ValueError(f'labels {unknown} are not among {", ".join(labels)}')
        return np.array([list(labels).index(v) for v in values], dtype=np.int64)
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() >= len(labels)):
        raise ValueError(f'label indices must be in 0..{len(labels) - 1}')
    return values


def mcnemar_p(generic_correct: np.ndarray, personal_correct: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: how likely the split of the discordant samples
    (one model right, the other wrong) is if both models were equally good."""
    from scipy.stats import binomtest
    only_personal = int(np.sum(personal_correct & ~generic_correct))
    only_generic = int(np.sum(generic_correct & ~personal_correct))
    if only_personal + only_generic == 0:
        return 1.0
    return float(binomtest(only_personal, only_personal + only_generic, 0.5).pvalue)


def comparison(y_true: Sequence, generic_probs: np.ndarray, personal_probs: np.ndarray,
               labels: Sequence[str] = EMOTION_LABELS,
               groups: Optional[Sequence[str]] = None) -> Dict:
    """Scores of both models on the same samples, their differences and per-group accuracy.

    ``*_probs``: (samples, classes) with columns in ``labels`` order; ``groups``: the
    session id of each sample (accuracy per session is added).
    """
    labels = list(labels)
    truth = label_indices(y_true, labels)
    results = {}
    predictions = {}
    for name, probs in zip(MODELS, (generic_probs, personal_probs)):
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (len(truth), len(labels)):
            raise ValueError(f'{name} probabilities have shape {probs.shape}, expected '
                             f'({len(truth)}, {len(labels)})')
        predictions[name] = probs.argmax(axis=1)
        results[name] = classification_summary(truth, predictions[name], labels)
        results[name]['mean_log_likelihood'] = float(np.mean(np.log(np.maximum(
            probs[np.arange(len(truth)), truth], 1e-12)))) if len(truth) else None
    correct = {name: predictions[name] == truth for name in MODELS}
    report = {
        'samples': int(len(truth)),
        'labels': labels,
        'support': {label: int(np.sum(truth == i)) for i, label in enumerate(labels)},
        **results,
        'gain': {key: results['personal'][key] - results['generic'][key]
                 for key in ('accuracy', 'macro_f1')},
        'mcnemar_p': mcnemar_p(correct['generic'], correct['personal']),
        'discordant': {'only_personal_right': int(np.sum(correct['personal']
                                                         & ~correct['generic'])),
                       'only_generic_right': int(np.sum(correct['generic']
                                                        & ~correct['personal']))},
    }
    if groups is not None:
        groups = np.asarray(groups, dtype=str)
        if groups.shape != truth.shape:
            raise ValueError('one group (session id) per sample is needed')
        report['per_group_accuracy'] = {
            str(g): {name: float(correct[name][groups == g].mean()) for name in MODELS}
            for g in sorted(set(groups.tolist()))}
    return report


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return '-'
    return f'{value:.{digits}f}'


def _signed(value, digits: int = 3) -> str:
    return '-' if value is None or np.isnan(value) else f'{value:+.{digits}f}'


def markdown(report: Dict, title: str, png_name: Optional[str] = None) -> str:
    """The report as a Markdown section (a table per score, the confusion PNG linked)."""
    g, p = report['generic'], report['personal']
    lines = [f'## {title}', '',
             f'{report["samples"]} held-out samples (' + ', '.join(
                 f'{k} {v}' for k, v in report['support'].items() if v) + ').', '',
             '| score | generic | personal | change |', '|---|---|---|---|',
             f'| accuracy | {_fmt(g["accuracy"])} | {_fmt(p["accuracy"])} | '
             f'{_signed(report["gain"]["accuracy"])} |',
             f'| macro-F1 | {_fmt(g["macro_f1"])} | {_fmt(p["macro_f1"])} | '
             f'{_signed(report["gain"]["macro_f1"])} |']
    for label in report['labels']:
        before, after = g['per_class_recall'][label], p['per_class_recall'][label]
        if before is None:
            continue
        lines.append(f'| recall {label} | {_fmt(before, 2)} | {_fmt(after, 2)} | '
                     f'{_signed(after - before, 2)} |')
    d = report['discordant']
    lines += ['', f'Samples only the personal model gets right: {d["only_personal_right"]}; '
              f'only the generic one: {d["only_generic_right"]}; McNemar exact p = '
              f'{report["mcnemar_p"]:.3g}' + (' (the difference may well be chance).'
                                               if report['mcnemar_p'] >= 0.05 else '.')]
    if 'per_group_accuracy' in report:
        lines += ['', '| session | generic accuracy | personal accuracy |', '|---|---|---|']
        lines += [f'| {group} | {_fmt(a["generic"])} | {_fmt(a["personal"])} |'
                  for group, a in report['per_group_accuracy'].items()]
    if png_name:
        lines += ['', f'![confusion matrices]({png_name})']
    return '\n'.join(lines) + '\n'


def plot_confusions(report: Dict, title: str, path: Path) -> Path:
    """Both confusion matrices side by side (rows: truth, shares per row, counts shown)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    labels = report['labels']
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for axis, name in zip(axes, MODELS):
        draw_confusion(axis, report[name]['confusion_matrix'], labels,
                       f'{name}: accuracy {_fmt(report[name]["accuracy"])}, '
                       f'macro-F1 {_fmt(report[name]["macro_f1"])}', cells='count')
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def score_lines(report: Dict, samples: str) -> List[str]:
    """One line per model of :func:`compare`'s report: accuracy and macro-F1 on how many
    ``samples``."""
    return [f'{name}: accuracy {report[name]["accuracy"]:.3f}, macro-F1 '
            f'{report[name]["macro_f1"]:.3f} on {report["samples"]} {samples}'
            for name in MODELS]


def write_json(data: Dict, path: Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(data, indent=1, default=json_default) + '\n')
    return path


def compare(y_true: Sequence, generic_probs: np.ndarray, personal_probs: np.ndarray,
            labels: Sequence[str] = EMOTION_LABELS, out_dir: Optional[Path] = None,
            title: str = 'generic versus personal model', name: str = 'comparison',
            groups: Optional[Sequence[str]] = None, info: Optional[Dict] = None) -> Dict:
    """Compare the two models on the same held-out samples; with ``out_dir``, write
    ``<name>.json``, ``<name>.md`` and ``<name>_confusion.png`` there.

    ``y_true``: label names or indices into ``labels``; ``*_probs``: (samples, classes)
    in ``labels`` order; ``groups``: session id per sample; ``info``: anything to keep
    with the figures (models, sessions, command), stored under ``info`` in the JSON.
    Returns the report (what the JSON holds).
    """
    report = comparison(y_true, generic_probs, personal_probs, labels, groups)
    report['title'] = title
    if info:
        report['info'] = info
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        png = plot_confusions(report, title, out_dir / f'{name}_confusion.png')
        (out_dir / f'{name}.md').write_text(f'# {title}\n\n' + markdown(report, 'Scores',
                                                                         png.name))
        write_json(report, out_dir / f'{name}.json')
    return report
