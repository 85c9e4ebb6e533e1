"""Measures the near-duplicate threshold of :mod:`mika_personal.face_data`.

    python studies/thinning_study.py --sessions 6 --fps 10 [--plot hist.png]

Videos of real faces (:mod:`mika_personal.face_video`: FER-2013 private-test faces per
labelled segment, each held 1 s, and the astronaut portrait, moving and with sensor noise)
go through the face node's detector, tracker and preprocessing (:mod:`face_data`). The
mean absolute difference of 16x16 thumbnails of the model inputs (and, to compare, of
the 48x48 inputs and 1 - SSIM) is collected for

- *neighbours*: consecutive frames (one frame apart) showing the same face image: what
  thinning must remove;
- *different, same label*: two frames of one session showing two different images of
  the same label: what thinning must keep (the hardest case of a real change);
- *different*: two frames showing different images of any label.

Measured with the command above (6 sessions of 7 labels x 3 images held 1 s each, 10 fps,
BlazeFace full range, face node defaults, seed 0; about half of the FER-2013 images are
not detected at all, as in the node), on 16x16 thumbnails of the model inputs:

| pairs | n | min | p1 | p50 | p95 | p99 | max | below 0.19 |
|---|---|---|---|---|---|---|---|---|
| neighbours | 515 | 0.008 | 0.012 | 0.042 | 0.114 | 0.182 | 0.342 | 99.0 % |
| astronaut neighbours | 98 | 0.009 | 0.010 | 0.026 | 0.043 | 0.067 | 0.072 | 100 % |
| different, same label | 3000 | 0.315 | 0.340 | 0.552 | 0.734 | 0.766 | 0.774 | 0 % |
| different | 3000 | 0.270 | 0.343 | 0.574 | 0.708 | 0.765 | 0.843 | 0 % |

The neighbours' tail (above 0.12) is the tracked box catching up after the head moved
(here: after the shown image changed): the same face, shifted by a few pixels; one
neighbour pair (0.342) lies above the closest pair of different faces (0.270), so the two
distributions touch only at their extremes. Separation (different p1 / neighbours p99):
thumbnails 1.87, MAD of the 48x48 inputs 1.48, 1 - SSIM 1.37: the thumbnails are used.
Threshold: the neighbours' 99th percentile rounded up, 0.19: as low as keeps 99 % of
neighbour pairs below it, because a person's own change of expression moves the face
less than the change to another person's face measured here (no data set at hand has one
person's changing expressions). The first frame of every label run is kept whatever its
difference, so a change of label is never thinned away. Histogram:
``studies/results/face_thinning.png``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from mika_evaluation.bag_format import Interval
from mika_personal import face_video
from mika_personal.face_data import (
    SessionFaces, build_extraction_pipeline, crop_difference, face_node_values,
    faces_from_frames, thumbnails)

PERCENTILES = (0, 1, 5, 50, 95, 99, 100)
KINDS = ('neighbours', 'astronaut neighbours', 'different, same label', 'different')


def _extract(segments, motion, pipeline, spec, session_id):
    intervals = [Interval(*i) for i in face_video.intervals_of(segments, motion)]
    frames = ((t, t + 1.0, image) for t, image in face_video.render_frames(segments, motion))
    dataset = faces_from_frames(frames, pipeline, spec, intervals,
                                SessionFaces(session_id)).dataset(spec)
    shown = [face_video.shown_at(segments, motion, t) for t in dataset.times]
    images = [segments[s].faces[i].tobytes() for s, i in shown]
    return dataset.inputs(), dataset, images


def _measures():
    """Candidate (dis)similarities of two model inputs; the first is the one used."""
    from skimage.metrics import structural_similarity

    def thumbnail_mad(a, b):
        return crop_difference(*thumbnails(np.stack([a, b])))

    def mad_48(a, b):
        return float(np.mean(np.abs(a - b)))

    def ssim_distance(a, b):
        return 1.0 - structural_similarity(a[:, :, 0], b[:, :, 0], data_range=2.0)

    return {'thumbnail MAD': thumbnail_mad, 'MAD 48x48': mad_48, '1 - SSIM': ssim_distance}


def measure(fer_path: Path, base_model: str, sessions: int = 6, fps: float = 10.0,
            images_per_segment: int = 3, pairs: int = 3000, seed: int = 0,
            params_file: Optional[Path] = None, log=print) -> Dict[str, Dict[str, np.ndarray]]:
    """{measure: {kind: values}} for the pair kinds of the module docstring."""
    from mika_perception.face_model import read_metadata
    spec = read_metadata(base_model).preprocess
    pipeline, _ = build_extraction_pipeline(face_node_values(params_file), base_model)
    faces = face_video.fer2013_faces(fer_path, seed=seed)
    rng = np.random.default_rng(seed)
    measures = _measures()
    values = {name: {kind: [] for kind in KINDS} for name in measures}

    def add(kind, x, pairs_of_rows):
        for name, function in measures.items():
            values[name][kind] += [function(x[i], x[j]) for i, j in pairs_of_rows]

    per_session = max(1, pairs // sessions)
    for number in range(sessions):
        motion = face_video.Motion(fps=fps, seed=seed + number)
        pool = face_video.repertoire(faces, images_per_segment,
                                     offset=number * images_per_segment)
        segments = face_video.session_segments(pool, images_per_segment, seed + number)
        x, dataset, images = _extract(segments, motion, pipeline, spec, f's{number}')
        add('neighbours', x, [(i, i + 1) for i in range(len(x) - 1)
                              if images[i] == images[i + 1]
                              and dataset.times[i + 1] - dataset.times[i] < 1.5 / fps])
        for kind, same_label in (('different, same label', True), ('different', False)):
            chosen = []
            for i, j in rng.integers(0, len(x), (100 * per_session, 2)):
                if images[i] != images[j] and (
                        dataset.labels[i] == dataset.labels[j]) == same_label:
                    chosen.append((i, j))
                    if len(chosen) == per_session:
                        break
            add(kind, x, chosen)
        log(f'session {number}: {len(x)} faces of {len(set(images))} images')
    motion = face_video.Motion(fps=fps, face_px=400, seed=seed + sessions)
    x, _, _ = _extract(face_video.astronaut_segments(10), motion, pipeline, spec, 'astronaut')
    add('astronaut neighbours', x, [(i, i + 1) for i in range(len(x) - 1)])
    return {name: {kind: np.array(v) for kind, v in kinds.items()}
            for name, kinds in values.items()}


def choose_threshold(distributions: Dict[str, np.ndarray]) -> float:
    """Just above 99 % of neighbouring frames (99th percentile rounded up to 0.01): as low
    as possible, because a person's own change of expression moves the face less than the
    change to another person's face measured here; refused if different faces fall below.
    """
    near = max(np.percentile(distributions['neighbours'], 99),
               np.percentile(distributions['astronaut neighbours'], 99))
    far = min(np.percentile(distributions['different, same label'], 1),
              np.percentile(distributions['different'], 1))
    threshold = float(np.ceil(near * 100) / 100)
    if not far > threshold:
        raise ValueError(f'the distributions overlap (neighbours p99 {near:.3f}, different '
                         f'p1 {far:.3f}): no threshold separates them')
    return threshold


def separation(distributions: Dict[str, np.ndarray]) -> float:
    """1st percentile of different pairs over 99th percentile of neighbours."""
    near = max(np.percentile(distributions['neighbours'], 99),
               np.percentile(distributions['astronaut neighbours'], 99))
    far = min(np.percentile(distributions['different, same label'], 1),
              np.percentile(distributions['different'], 1))
    return float(far / near)


def summary(distributions: Dict[str, np.ndarray], threshold: float) -> str:
    """A markdown table of the percentiles and of the share below the threshold."""
    header = ' | '.join(f'p{p}' for p in PERCENTILES)
    lines = [f'| pairs | n | {header} | below {threshold} |',
             '|' + '---|' * (len(PERCENTILES) + 3)]
    for name, values in distributions.items():
        cells = ' | '.join(f'{v:.3f}' for v in np.percentile(values, PERCENTILES))
        lines.append(f'| {name} | {len(values)} | {cells} | '
                     f'{np.mean(values < threshold) * 100:.1f} % |')
    return '\n'.join(lines)


def plot(distributions: Dict[str, np.ndarray], threshold: float, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, 0.8, 81)
    for name, values in distributions.items():
        axes.hist(values, bins=bins, alpha=0.5, density=True, label=f'{name} ({len(values)})')
    axes.axvline(threshold, color='black', linestyle='--', label=f'threshold {threshold}')
    axes.set_xlabel('mean absolute difference of 16x16 thumbnails of the model inputs')
    axes.set_ylabel('density')
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse_args(argv: Optional[Sequence[str]] = None):
    from mika_perception.face_model import DEFAULT_MODEL_PATH
    from mika_perception.training.train_face import default_fer_path
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--fer', type=Path, default=Path(default_fer_path()))
    parser.add_argument('--base-model', default=str(DEFAULT_MODEL_PATH))
    parser.add_argument('--params', type=Path, default=None,
                        help='launch params YAML for the face node (default: its defaults)')
    parser.add_argument('--sessions', type=int, default=6)
    parser.add_argument('--fps', type=float, default=10.0)
    parser.add_argument('--images-per-segment', type=int, default=3)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--plot', type=Path, default=None, help='histogram PNG to write')
    parser.add_argument('--json', type=Path, default=None, help='raw distributions to write')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    measured = measure(args.fer, args.base_model, args.sessions, args.fps,
                       args.images_per_segment, seed=args.seed, params_file=args.params)
    for name, distributions in measured.items():
        print(f'{name}: separation (different p1 / neighbours p99) '
              f'{separation(distributions):.2f}')
    used = measured['thumbnail MAD']
    threshold = choose_threshold(used)
    print(summary(used, threshold))
    print(f'chosen threshold: {threshold}')
    if args.plot:
        plot(used, threshold, args.plot)
    if args.json:
        args.json.write_text(json.dumps({name: {k: v.tolist() for k, v in kinds.items()}
                                         for name, kinds in measured.items()}))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
