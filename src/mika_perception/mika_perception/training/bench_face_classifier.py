"""Per-face classification latency on this CPU; writes a Markdown table.

Measures the classifier alone (preprocessed input ready), the way the node calls it,
with one inference thread: one face, three faces in one batch, with and without flip TTA,
for the TFLite runtime and for Keras.

    python -m mika_perception.training.bench_face_classifier \\
        --output bench/results/face_classifier.md
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from mika_perception.face_model import DEFAULT_MODEL_PATH, FaceEmotionClassifier, parity_probe


def _limit_tensorflow_threads(threads: int) -> None:
    """Keras' TensorFlow backend otherwise uses every core."""
    try:
        import tensorflow as tf
    except ImportError:
        return
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def measure(classifier: FaceEmotionClassifier, faces: int, repeats: int) -> dict:
    batch = parity_probe(classifier.spec, count=faces)
    for _ in range(20):
        classifier.classify_batch(batch)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        classifier.classify_batch(batch)
        times.append(time.perf_counter() - started)
    times_ms = np.array(times) * 1000
    return {'min': float(times_ms.min()), 'p50': float(np.percentile(times_ms, 50)),
            'p95': float(np.percentile(times_ms, 95)),
            'per_face_p50': float(np.percentile(times_ms, 50)) / faces}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', action='append', default=None,
                        help='model file (repeat for an ensemble); default: shipped model')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=500)
    parser.add_argument('--output', default='bench/results/face_classifier.md')
    args = parser.parse_args(argv)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    _limit_tensorflow_threads(args.threads)
    models = args.model or [DEFAULT_MODEL_PATH]

    rows = []
    for runtime in ('tflite', 'keras'):
        for flip_tta in (False, True):
            classifier = FaceEmotionClassifier(models, flip_tta=flip_tta, runtime=runtime,
                                               num_threads=args.threads)
            for faces in (1, 3):
                repeats = args.repeats if runtime == 'tflite' else args.repeats // 5
                figures = measure(classifier, faces, repeats)
                rows.append((runtime, 'yes' if flip_tta else 'no', faces, figures))
                print(runtime, flip_tta, faces, {k: round(v, 3) for k, v in figures.items()},
                      flush=True)

    lines = [
        '# Face classifier latency',
        '',
        f'Models: {", ".join(os.path.basename(m) for m in models)}; '
        f'{args.threads} inference thread(s); {platform.processor() or platform.machine()}, '
        f'{os.cpu_count()} cores visible; load average at start '
        f'{os.getloadavg()[0]:.2f} (other processes share this CPU). '
        f'Input already preprocessed; times in ms.',
        '',
        '| runtime | flip TTA | faces per batch | min | p50 | p95 | per face (p50) |',
        '|---|---|---|---|---|---|---|',
    ]
    for runtime, tta, faces, f in rows:
        lines.append(f'| {runtime} | {tta} | {faces} | {f["min"]:.2f} | {f["p50"]:.2f} | '
                     f'{f["p95"]:.2f} | '
                     f'{f["per_face_p50"]:.2f} |')
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, 'w') as stream:
        stream.write('\n'.join(lines) + '\n')
    print(f'wrote {args.output}')


if __name__ == '__main__':
    main()
