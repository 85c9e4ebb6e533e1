"""Face accuracy through the node's own path, not on dataset crops.

FER-2013 faces are rendered into 640x480 camera-like frames (several face sizes up to a
face filling the frame height, random positions, in-plane rotations, textured backgrounds,
brightness), then found by the node's detector and classified from the box it gives, with
the model file's own preprocessing: what the face node does with one frame. The crop-only
figure of the same faces stands beside it, so the table shows what framing and detection
cost. Tracking is left out: on a still frame its smoothed box is the detection's.

    python -m mika_perception.training.pipeline_accuracy --split private_test \\
        --output bench/results/face_pipeline_accuracy

``public_test`` is for choices (e.g. the framing of the crop); ``private_test`` reports.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_perception.preprocessing import face_crop, preprocess_crops

FRAME_WIDTH, FRAME_HEIGHT = 640, 480
#: Face sizes (side of the rendered FER-2013 crop, pixels): far to filling the frame height.
FACE_SIZES = (24, 32, 40, 64, 96, 160, 256, 384, 480)
MAX_ROTATION_DEG = 15.0
#: Least face size the goals are stated for (the node's default min_face_px).
GOAL_MIN_SIZE = 40
#: scikit-image's bundled pictures without faces, as camera backgrounds.
BACKGROUND_IMAGES = ('coffee', 'rocket', 'brick', 'grass', 'gravel', 'coins', 'moon',
                     'page', 'text', 'immunohistochemistry', 'hubble_deep_field', 'clock')


@dataclass(frozen=True)
class RenderedFace:
    """Where the FER crop landed: its centre, side and rotation (degrees, counter-clockwise)."""

    centre: Tuple[float, float]
    size: int
    angle_deg: float


def camera_backgrounds() -> List[np.ndarray]:
    """640x480 BGR backgrounds: scikit-image's pictures, a flat wall and a gradient."""
    from skimage import data
    backgrounds = []
    for name in BACKGROUND_IMAGES:
        image = getattr(data, name)()
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        else:
            image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_RGB2BGR)
        backgrounds.append(cv2.resize(image, (FRAME_WIDTH, FRAME_HEIGHT),
                                      interpolation=cv2.INTER_AREA))
    backgrounds.append(np.full((FRAME_HEIGHT, FRAME_WIDTH, 3), 128, np.uint8))
    ramp = np.linspace(40, 220, FRAME_WIDTH, dtype=np.float32)
    backgrounds.append(np.repeat(np.tile(ramp, (FRAME_HEIGHT, 1))[:, :, None], 3, axis=2)
                       .astype(np.uint8))
    return backgrounds


def render_face(crop: np.ndarray, size: int, background: np.ndarray,
                rng: np.random.Generator) -> Tuple[np.ndarray, RenderedFace]:
    """``crop`` (grey) scaled to ``size``, rotated, blended into ``background`` at a random
    place that keeps it inside the frame; the whole frame then gets a brightness change."""
    angle = float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    radians = math.radians(abs(angle))
    half_extent = size / 2 * (math.cos(radians) + math.sin(radians))
    # faces as tall as the frame may be clipped at the top and bottom edges after rotation
    half_x = min(half_extent, FRAME_WIDTH / 2)
    half_y = min(half_extent, FRAME_HEIGHT / 2)
    centre = (float(rng.uniform(half_x, FRAME_WIDTH - half_x)),
              float(rng.uniform(half_y, FRAME_HEIGHT - half_y)))
    # The crop's own pixels stay whole; around them its edge rows, smeared, fade into the
    # scene (a hard square edge, or a fade over the face, would change what is measured).
    pad = max(2, size // 8)
    feather = max(1, pad // 2)
    face = cv2.copyMakeBorder(cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC),
                              pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    mask = np.zeros(face.shape, np.float32)
    mask[pad - feather:pad + size + feather, pad - feather:pad + size + feather] = 1.0
    mask = np.maximum(cv2.GaussianBlur(mask, (0, 0), feather / 2), _inside(face.shape, pad))
    outer = size + 2 * pad
    matrix = cv2.getRotationMatrix2D((outer / 2 - 0.5, outer / 2 - 0.5), angle, 1.0)
    matrix[:, 2] += np.array(centre) - outer / 2
    frame_size = (FRAME_WIDTH, FRAME_HEIGHT)
    warped = cv2.warpAffine(face, matrix, frame_size, flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, matrix, frame_size, flags=cv2.INTER_LINEAR)[:, :, None]
    frame = background.astype(np.float32) * (1 - alpha) + warped[:, :, None] * alpha
    gain, offset = rng.uniform(0.7, 1.3), rng.uniform(-20, 20)
    frame = np.clip(frame * gain + offset, 0, 255).astype(np.uint8)
    return frame, RenderedFace(centre, size, angle)


def _inside(shape, pad: int) -> np.ndarray:
    inside = np.zeros(shape, np.float32)
    inside[pad:shape[0] - pad, pad:shape[1] - pad] = 1.0
    return inside


def match_detection(detections, truth: RenderedFace):
    """The detection that is this face: centre within a third of its size, plausible size."""
    best, best_distance = None, truth.size / 3
    for detection in detections:
        x, y, w, h = detection.box
        distance = math.hypot(x + w / 2 - truth.centre[0], y + h / 2 - truth.centre[1])
        if distance <= best_distance and 0.3 * truth.size <= max(w, h) <= 1.6 * truth.size:
            best, best_distance = detection, distance
    return best


def whole_pixel_box(box) -> Tuple[int, int, int, int]:
    """The box as the pipeline hands it to the classifier (whole pixels, inside the frame)."""
    x0, y0 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    x1 = min(FRAME_WIDTH, int(round(box[0] + box[2])))
    y1 = min(FRAME_HEIGHT, int(round(box[1] + box[3])))
    return (x0, y0, x1 - x0, y1 - y0)


def detector_framed_crops(images: np.ndarray, detector, spec, seed: int,
                          sizes: Tuple[int, int] = (64, 480)) -> Tuple[np.ndarray, np.ndarray]:
    """Each face rendered once into a frame (a random size in ``sizes``) and cut out again
    the node's way: its detector's box and eye line, the spec's framing. For training on
    the framing the node produces. Returns (crops, indices of the faces found)."""
    backgrounds = camera_backgrounds()
    rng = np.random.default_rng(seed)
    crops, found = [], []
    for index, crop in enumerate(images):
        size = int(rng.integers(sizes[0], sizes[1] + 1))
        frame, truth = render_face(crop, size, backgrounds[rng.integers(len(backgrounds))],
                                   rng)
        detector.reset()  # unrelated frames: no face of the last one to look for again
        detection = match_detection(detector.detect(frame), truth)
        if detection is not None:
            crops.append(face_crop(frame, whole_pixel_box(detection.box), spec,
                                   detection.roll_deg))
            found.append(index)
    return np.array(crops, np.uint8).reshape(-1, spec.size, spec.size), np.array(found, int)


def run(images: np.ndarray, labels: np.ndarray, detector, classifier,
        sizes: Sequence[int] = FACE_SIZES, seed: int = 0) -> dict:
    """Every face at every size: detection, framing measurements and predictions."""
    backgrounds = camera_backgrounds()
    crop_predictions = classifier.classify_batch(
        preprocess_crops(images, classifier.spec)).argmax(1)
    per_size = {}
    for size in sizes:
        rng = np.random.default_rng([seed, size])
        predictions = np.full(len(images), -1, np.int64)
        framing = []  # (true centre - box centre) / box side, true size / box side
        started = time.perf_counter()
        for index, crop in enumerate(images):
            background = backgrounds[rng.integers(len(backgrounds))]
            frame, truth = render_face(crop, size, background, rng)
            detector.reset()  # unrelated frames: no face of the last one to look for again
            detection = match_detection(detector.detect(frame), truth)
            if detection is None:
                continue
            box = whole_pixel_box(detection.box)
            predictions[index] = int(classifier.classify_faces(
                frame, [box], [detection.roll_deg]).argmax(1)[0])
            x, y, w, h = detection.box
            framing.append(((truth.centre[0] - x - w / 2) / w, (truth.centre[1] - y - h / 2) / h,
                            truth.size / w, truth.size / h))
        per_size[size] = {'predictions': predictions, 'framing': np.array(framing),
                          'seconds': time.perf_counter() - started}
        detected = predictions >= 0
        print(f'size {size:3d}: detected {detected.mean():.3f}, accuracy '
              f'{np.mean(predictions[detected] == labels[detected]):.3f} '
              f'(crop {np.mean(crop_predictions[detected] == labels[detected]):.3f}) '
              f'in {per_size[size]["seconds"]:.0f} s', flush=True)
    return {'crop_predictions': crop_predictions, 'per_size': per_size}


def recall(labels: np.ndarray, predictions: np.ndarray) -> List[float]:
    return [float(np.mean(predictions[labels == k] == k)) if np.any(labels == k) else math.nan
            for k in range(len(EMOTION_LABELS))]


def summarise(labels: np.ndarray, outcome: dict, goal_min_size: int = GOAL_MIN_SIZE,
              duplicated_in_train: Optional[np.ndarray] = None) -> dict:
    """Detection rate, accuracy and per-class recall per size, and pooled over the sizes
    the goals cover, each beside the crop-only figure of the same faces.

    With ``duplicated_in_train`` the pooled row is repeated without the test faces that are
    byte-identical to a training image: the model has memorised those crops, which inflates
    the crop figure (disgust most) but not the rendered and resampled copy of them."""
    crop = outcome['crop_predictions']
    if duplicated_in_train is None:
        duplicated_in_train = np.zeros(len(labels), bool)
    rows = {}
    pooled_labels, pooled_pipeline, pooled_crop, pooled_framing = [], [], [], []
    pooled_duplicated = []
    for size, result in outcome['per_size'].items():
        predictions = result['predictions']
        detected = predictions >= 0
        rows[str(size)] = _row(labels, predictions, crop, detected)
        rows[str(size)]['framing_median'] = (
            np.median(result['framing'], axis=0).round(3).tolist()
            if len(result['framing']) else None)
        if size >= goal_min_size:
            pooled_labels.append(labels)
            pooled_pipeline.append(predictions)
            pooled_crop.append(crop)
            pooled_duplicated.append(duplicated_in_train)
            if len(result['framing']):
                pooled_framing.append(result['framing'])
    summary = {'sizes': rows}
    if pooled_labels:
        labels_all = np.concatenate(pooled_labels)
        predictions_all = np.concatenate(pooled_pipeline)
        crop_all = np.concatenate(pooled_crop)
        summary[f'pooled_{goal_min_size}px_and_more'] = _row(
            labels_all, predictions_all, crop_all, predictions_all >= 0)
        unique = ~np.concatenate(pooled_duplicated)
        if not unique.all():
            summary[f'pooled_{goal_min_size}px_and_more_not_in_train'] = _row(
                labels_all[unique], predictions_all[unique], crop_all[unique],
                predictions_all[unique] >= 0)
        if pooled_framing:
            framing = np.concatenate(pooled_framing)
            summary['framing_median'] = np.median(framing, axis=0).round(4).tolist()
    summary['crop_only'] = {'accuracy': float(np.mean(crop == labels)),
                            'per_class_recall': recall(labels, crop)}
    return summary


def _row(labels, predictions, crop, detected) -> dict:
    return {
        'faces': int(len(labels)),
        'detection_rate': float(detected.mean()),
        'accuracy': float(np.mean(predictions[detected] == labels[detected]))
        if detected.any() else math.nan,
        'crop_accuracy_same_faces': float(np.mean(crop[detected] == labels[detected]))
        if detected.any() else math.nan,
        'per_class_recall': recall(labels[detected], predictions[detected]),
        'crop_per_class_recall_same_faces': recall(labels[detected], crop[detected]),
    }


def markdown(summary: dict, title: str) -> str:
    short = ' '.join(label[:3] for label in EMOTION_LABELS)
    lines = [f'# {title}', '',
             f'| face px | faces | detected | pipeline acc | crop acc (same faces) | '
             f'pipeline recall ({short}) | crop recall |',
             '|---|---|---|---|---|---|---|']
    keys = list(summary['sizes']) + [k for k in summary if k.startswith('pooled_')]
    for key in keys:
        row = summary['sizes'].get(key) or summary[key]
        lines.append(
            f'| {key.replace("_", " ")} | {row["faces"]} | {row["detection_rate"]:.3f} | '
            f'{row["accuracy"]:.3f} | {row["crop_accuracy_same_faces"]:.3f} | '
            + ' '.join(f'{v:.2f}' for v in row['per_class_recall']) + ' | '
            + ' '.join(f'{v:.2f}' for v in row['crop_per_class_recall_same_faces']) + ' |')
    crop = summary['crop_only']
    lines += ['', f'Crop only, all faces: accuracy {crop["accuracy"]:.3f}, recall '
              + ' '.join(f'{v:.2f}' for v in crop['per_class_recall']) + '.']
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    from mika_perception.detection import DETECTORS
    from mika_perception.face_parameters import build_face_pipeline, node_defaults
    from mika_perception.training.train_face import default_fer_path, load_fer2013

    defaults = node_defaults()
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--fer', default=default_fer_path())
    parser.add_argument('--split', default='public_test',
                        choices=('public_test', 'private_test'))
    parser.add_argument('--model', action='append',
                        help='model file; repeat for an ensemble (default: the node default)')
    parser.add_argument('--flip-tta', action='store_true')
    parser.add_argument('--detector', default=defaults['detector'], choices=DETECTORS)
    parser.add_argument('--min-face-px', type=int, default=defaults['min_face_px'])
    parser.add_argument('--search-tiles', type=int,
                        default=defaults['detector_search_tiles'])
    parser.add_argument('--sizes', type=int, nargs='+', default=list(FACE_SIZES))
    parser.add_argument('--limit', type=int, default=0,
                        help='a random N of the split (seeded; 0: all faces)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--output', required=True,
                        help='path without extension: writes <output>.json and <output>.md')
    args = parser.parse_args(argv)

    values = dict(defaults, detector=args.detector, min_face_px=args.min_face_px,
                  detector_search_tiles=args.search_tiles, flip_tta=args.flip_tta,
                  runtime='tflite', detector_idle_search_every=1)  # unrelated still frames
    pipeline, classifier, notes = build_face_pipeline(values, args.model)
    for note in notes:
        print(note)
    split = load_fer2013(args.fer)[args.split]
    images, labels, duplicated = split.images, split.labels, split.duplicated_in_train
    if args.limit:
        chosen = np.sort(np.random.default_rng(args.seed).permutation(len(labels))[:args.limit])
        images, labels, duplicated = images[chosen], labels[chosen], duplicated[chosen]
    outcome = run(images, labels, pipeline.detector, classifier, args.sizes, args.seed)
    summary = summarise(labels, outcome, duplicated_in_train=duplicated)
    summary.update(split=args.split, models=args.model or defaults['model_paths'],
                   detector=pipeline.detector.name, flip_tta=args.flip_tta,
                   preprocessing=classifier.spec.to_dict())
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output + '.json', 'w') as stream:
        json.dump(summary, stream, indent=2)
    title = (f'Face accuracy through the pipeline: FER-2013 {args.split} in 640x480 frames '
             f'({pipeline.detector.name}, {", ".join(summary["models"])}'
             f'{", flip TTA" if args.flip_tta else ""})')
    with open(args.output + '.md', 'w') as stream:
        stream.write(markdown(summary, title))
    print(markdown(summary, title))
    return summary


if __name__ == '__main__':
    main()
