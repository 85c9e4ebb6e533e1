"""Evaluate one model file, or an ensemble of several, on a FER-2013 split.

Same figures as training reports (accuracy, macro-F1, per-class recall, confusion PNGs;
all images and those not duplicated in train; plain and flip TTA), written to JSON.

    python -m mika_perception.training.evaluate_face --model a.keras --model b.keras \\
        --split private_test --out-dir face_eval
"""
from __future__ import annotations

import argparse
import json
import os

from mika_perception.face_model import load_model
from mika_perception.training.train_face import default_fer_path, load_fer2013, report_test


def evaluate(model_paths, fer_path: str, split: str, out_dir: str) -> dict:
    loaded = [load_model(path) for path in model_paths]
    specs = {metadata.preprocess for _, metadata in loaded}
    if len(specs) != 1:
        raise SystemExit('ensemble members use different preprocessing')
    os.makedirs(out_dir, exist_ok=True)
    tag = 'ensemble' if len(loaded) > 1 else 'single'
    report = report_test([model for model, _ in loaded], load_fer2013(fer_path)[split],
                         specs.pop(), out_dir, tag)
    result = {'models': list(model_paths), 'split': split, 'figures': report}
    with open(os.path.join(out_dir, f'{tag}_{split}.json'), 'w') as stream:
        json.dump(result, stream, indent=2)
    for key, metrics in report.items():
        print(f'{tag} {split} {key}: accuracy {metrics["accuracy"]:.4f} '
              f'macro-F1 {metrics["macro_f1"]:.4f} (n={metrics["count"]})')
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', action='append', required=True,
                        help='model file; repeat for an ensemble (outputs averaged)')
    parser.add_argument('--fer', default=default_fer_path())
    parser.add_argument('--split', default='public_test',
                        choices=('public_test', 'private_test'),
                        help='private_test only for the final, once-only report')
    parser.add_argument('--out-dir', default='face_eval')
    args = parser.parse_args(argv)
    evaluate(args.model, args.fer, args.split, args.out_dir)


if __name__ == '__main__':
    main()
