"""Classification and temporal metrics in NumPy (no scikit-learn dependency).

Classification metrics take integer class indices; temporal metrics take a timeline of
sampled labels (None: no state, or no truth) at increasing times.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np


def confusion_matrix(truth: Sequence[int], predicted: Sequence[int], classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(truth, int), np.asarray(predicted, int)), 1)
    return matrix


def accuracy(matrix: np.ndarray) -> float:
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else float('nan')


def per_class_recall(matrix: np.ndarray) -> np.ndarray:
    """NaN for a class that never occurs in the truth."""
    support = matrix.sum(axis=1).astype(float)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(support > 0, np.diag(matrix) / support, np.nan)


def per_class_precision(matrix: np.ndarray) -> np.ndarray:
    predicted = matrix.sum(axis=0).astype(float)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(predicted > 0, np.diag(matrix) / predicted, 0.0)


def macro_f1(matrix: np.ndarray) -> float:
    """Mean F1 over the classes present in the truth (absent classes do not count, as
    scikit-learn with ``labels`` = the classes seen in y_true)."""
    recall = per_class_recall(matrix)
    precision = per_class_precision(matrix)
    present = matrix.sum(axis=1) > 0
    if not np.any(present):
        return float('nan')
    r, p = recall[present], precision[present]
    with np.errstate(invalid='ignore', divide='ignore'):
        f1 = np.where(r + p > 0, 2 * r * p / (r + p), 0.0)
    return float(f1.mean())


def cohen_kappa(matrix: np.ndarray) -> float:
    total = matrix.sum()
    if not total:
        return float('nan')
    observed = np.trace(matrix) / total
    expected = float((matrix.sum(axis=0) * matrix.sum(axis=1)).sum()) / total ** 2
    return float((observed - expected) / (1 - expected)) if expected < 1 else 0.0


def matthews_correlation(matrix: np.ndarray) -> float:
    """Multi-class MCC (Gorodkin's R_K); 0 where it is undefined (one class only)."""
    c = matrix.astype(float)
    s = c.sum()
    correct = np.trace(c)
    p = c.sum(axis=0)  # predicted per class
    t = c.sum(axis=1)  # true per class
    numerator = correct * s - float(p @ t)
    denominator = np.sqrt(s ** 2 - float(p @ p)) * np.sqrt(s ** 2 - float(t @ t))
    return float(numerator / denominator) if denominator > 0 else 0.0


def classification_summary(truth: Sequence[int], predicted: Sequence[int],
                           names: Sequence[str]) -> Dict:
    matrix = confusion_matrix(truth, predicted, len(names))
    recall = per_class_recall(matrix)
    return {
        'samples': int(matrix.sum()),
        'accuracy': accuracy(matrix),
        'macro_f1': macro_f1(matrix),
        'matthews_correlation': matthews_correlation(matrix),
        'cohen_kappa': cohen_kappa(matrix),
        'per_class_recall': {name: (None if np.isnan(value) else float(value))
                             for name, value in zip(names, recall)},
        'confusion_matrix': matrix.tolist(),
    }


# ----------------------------------------------------------------------------- temporal
def _stretches(truth: Sequence[Optional[str]]) -> List[tuple]:
    """(first index, end index, label) of constant, labelled runs of ``truth``."""
    runs, start = [], 0
    for index in range(1, len(truth) + 1):
        if index == len(truth) or truth[index] != truth[start]:
            if truth[start] is not None:
                runs.append((start, index, truth[start]))
            start = index
    return runs


def coverage(truth: Sequence[Optional[str]], predicted: Sequence[Optional[str]]) -> float:
    """Share of labelled samples at which the system had a state."""
    labelled = [p for t, p in zip(truth, predicted) if t is not None]
    return float(np.mean([p is not None for p in labelled])) if labelled else float('nan')


def flips_per_minute(times: np.ndarray, truth: Sequence[Optional[str]],
                     predicted: Sequence[Optional[str]]) -> float:
    """State changes inside constant-truth stretches per minute of those stretches.

    The first change of a stretch into its true label is the wanted reaction and does not
    count; every other change between two labels does (gaps without a state are skipped).
    """
    flips, minutes = 0, 0.0
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    for first, end, label in _stretches(truth):
        minutes += (end - first) * step / 60.0
        flips += flips_in_stretch(predicted[first:end], label)
    return flips / minutes if minutes > 0 else float('nan')


def flips_in_stretch(predicted: Sequence[Optional[str]], label: str) -> int:
    """Changes of ``predicted`` while the truth stays ``label``, less the one reaction."""
    flips, previous, reacted = 0, None, False
    for value in predicted:
        if value is None:
            continue
        if previous is not None and value != previous:
            if value == label and not reacted:
                reacted = True
            else:
                flips += 1
        if value == label:
            reacted = True
        previous = value
    return flips


def bootstrap_interval(statistic, rows: Sequence, rounds: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple:
    """Percentile interval of ``statistic(rows)`` over ``rounds`` resamples of ``rows`` with
    replacement (rows: independent units, such as labelled segments)."""
    rng = np.random.default_rng(seed)
    values = [statistic([rows[i] for i in rng.integers(0, len(rows), len(rows))])
              for _ in range(rounds)]
    tail = (1.0 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def reaction_times(times: np.ndarray, truth: Sequence[Optional[str]],
                   predicted: Sequence[Optional[str]]) -> Dict:
    """After each change of the true label (to a label, from another label or from none):
    time until the state first equals the new label, within the stretch. Stretches whose
    label is never reached count as misses."""
    delays: List[float] = []
    missed = 0
    for first, end, label in _stretches(truth):
        if first == 0:
            continue  # no change: the recording starts here
        hit = next((i for i in range(first, end) if predicted[i] == label), None)
        if hit is None:
            missed += 1
        else:
            delays.append(float(times[hit] - times[first]))
    return {
        'changes': len(delays) + missed,
        'reached': len(delays),
        'missed': missed,
        'median_s': float(np.median(delays)) if delays else None,
        'mean_s': float(np.mean(delays)) if delays else None,
        'p90_s': float(np.percentile(delays, 90)) if delays else None,
    }


def latency_summary(seconds: Sequence[float]) -> Dict:
    values = np.asarray(seconds, dtype=float) * 1e3
    if values.size == 0:
        return {'count': 0}
    return {'count': int(values.size), 'mean_ms': float(values.mean()),
            'p50_ms': float(np.percentile(values, 50)),
            'p95_ms': float(np.percentile(values, 95)), 'max_ms': float(values.max())}
