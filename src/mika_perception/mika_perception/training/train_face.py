"""Train the face emotion model on FER-2013 (and/or image folders); a CLI and importable.

Trains on ``train``, selects on ``public_test`` (early stopping, best checkpoint) and
reports ``private_test`` once, on all images and on those not duplicated in train, with
and without flip test-time augmentation. Backend-agnostic Keras 3 (TensorFlow on CPU
here, JAX on a GPU machine): augmentation is done in NumPy, the model is plain layers.

    python -m mika_perception.training.train_face --output models/face_emotion.keras
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Dict, Optional, Sequence

import cv2
import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_common.workspace import shared_data_dir
from mika_perception.preprocessing import PreprocessSpec, preprocess_face

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.pgm', '.tif', '.tiff')


def default_fer_path() -> str:
    return str(shared_data_dir() / 'fer2013' / 'fer2013.npz')


# ---------------------------------------------------------------------------- data
class Split:
    """Raw uint8 face crops with labels in :data:`EMOTION_LABELS` order."""

    def __init__(self, images: np.ndarray, labels: np.ndarray,
                 duplicated_in_train: Optional[np.ndarray] = None):
        self.images = images
        self.labels = labels.astype(np.int64)
        self.duplicated_in_train = (np.zeros(len(labels), bool)
                                    if duplicated_in_train is None else duplicated_in_train)

    def __len__(self):
        return len(self.labels)

    def concatenate(self, other: 'Split') -> 'Split':
        return Split(np.concatenate([self.images, other.images]),
                     np.concatenate([self.labels, other.labels]),
                     np.concatenate([self.duplicated_in_train, other.duplicated_in_train]))


def load_fer2013(path: str) -> Dict[str, Split]:
    """The official train / public_test / private_test split of ``fer2013.npz``."""
    data = np.load(path)
    names = [str(n) for n in data['label_names']]
    to_canonical = np.array([EMOTION_LABELS.index(n) for n in names])
    labels = to_canonical[data['labels'].astype(np.int64)]
    splits = {}
    for split in ('train', 'public_test', 'private_test'):
        chosen = data['split'] == split
        splits[split] = Split(data['images'][chosen], labels[chosen],
                              data['test_image_also_in_train'][chosen])
    return splits


def load_image_folders(root: str, size: int) -> Split:
    """Images laid out as ``root/<emotion>/*.png``; folders of other names are skipped.

    Images are read grey and resized to ``size`` x ``size`` (they are taken as face crops).
    """
    images, labels = [], []
    for label in EMOTION_LABELS:
        folder = os.path.join(root, label)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            grey = cv2.imread(os.path.join(folder, name), cv2.IMREAD_GRAYSCALE)
            if grey is None:
                print(f'skipping unreadable image {os.path.join(folder, name)}',
                      file=sys.stderr)
                continue
            images.append(cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA))
            labels.append(EMOTION_LABELS.index(label))
    if not images:
        raise ValueError(f'no images found in {root}/<{"|".join(EMOTION_LABELS)}>/')
    return Split(np.stack(images), np.array(labels))


def detector_framed_split(split: Split, spec: PreprocessSpec, copies: int, seed: int) -> Split:
    """``copies`` renderings of every face into camera frames, cut out again by the face
    node's default detector and the spec's framing (see
    :func:`mika_perception.training.pipeline_accuracy.detector_framed_crops`); faces the
    detector misses in a rendering are left out of it."""
    from mika_perception.face_parameters import create_face_detector, node_defaults
    from mika_perception.training.pipeline_accuracy import detector_framed_crops

    # every image is a scene of its own: the tiled search on each (no idle skipping)
    detector, _ = create_face_detector(dict(node_defaults(), detector_idle_search_every=1))
    images, labels = [], []
    for copy in range(copies):
        started = time.time()
        crops, found = detector_framed_crops(split.images, detector, spec, seed * 1000 + copy)
        print(f'detector-framed copy {copy + 1}/{copies}: {len(found)} of {len(split)} '
              f'faces found in {time.time() - started:.0f} s', flush=True)
        images.append(crops)
        labels.append(split.labels[found])
    return Split(np.concatenate(images), np.concatenate(labels))


def prepare(images: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The shared preprocessing over a batch of ready crops."""
    out = np.empty((len(images),) + spec.input_shape, np.float32)
    for i, image in enumerate(images):
        out[i] = preprocess_face(image, None, spec)
    return out


# ---------------------------------------------------------------------- augmentation
def augment(image: np.ndarray, rng: np.random.Generator, max_shift: float = 0.08,
            max_rotation_deg: float = 10.0, max_zoom: float = 0.08) -> np.ndarray:
    """Conservative geometry on a raw crop: flip, small shift, rotation and zoom."""
    if rng.random() < 0.5:
        image = image[:, ::-1]
    size = image.shape[0]
    angle = rng.uniform(-max_rotation_deg, max_rotation_deg)
    scale = 1.0 + rng.uniform(-max_zoom, max_zoom)
    matrix = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle, scale)
    matrix[:, 2] += rng.uniform(-max_shift, max_shift, 2) * size
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def class_weights(labels: np.ndarray, power: float) -> np.ndarray:
    """Inverse class frequency to ``power`` (0: none, 0.5: softened, 1: balanced), mean 1."""
    counts = np.bincount(labels, minlength=len(EMOTION_LABELS)).astype(np.float64)
    weights = (counts.sum() / np.maximum(counts, 1)) ** power
    return weights / np.sum(weights * counts) * counts.sum()


def make_training_sequence(split: Split, spec: PreprocessSpec, batch_size: int,
                           weights: np.ndarray, smoothing_classes: int, seed: int):
    import keras

    class AugmentedFaces(keras.utils.PyDataset):
        """Shuffled, freshly augmented, preprocessed batches every epoch."""

        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(split))

        def __len__(self):
            return math.ceil(len(split) / batch_size)

        def __getitem__(self, index):
            chosen = self.order[index * batch_size:(index + 1) * batch_size]
            x = np.empty((len(chosen),) + spec.input_shape, np.float32)
            for i, j in enumerate(chosen):
                x[i] = preprocess_face(augment(split.images[j], self.rng), None, spec)
            labels = split.labels[chosen]
            y = np.eye(smoothing_classes, dtype=np.float32)[labels]
            return x, y, weights[labels].astype(np.float32)

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(split))

    return AugmentedFaces()


# ----------------------------------------------------------------------------- model
def build_model(spec: PreprocessSpec, width: int = 32, dropout: float = 0.4):
    """Compact VGG-style CNN: one conv at full resolution, then three double-conv stages.

    The last stage is 6x (not 8x) the width to keep the file under 5 MB.

    Chosen by measurement on a 2-core CPU: a full-resolution double conv or separable
    convolutions made an epoch 4x slower for no gain that fits the training budget.
    """
    import keras
    from keras import layers

    def conv_bn_relu(x, filters):
        x = layers.Conv2D(filters, 3, padding='same', use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    inputs = keras.Input(spec.input_shape, name='face')
    x = conv_bn_relu(inputs, width)
    x = layers.MaxPooling2D()(x)
    for filters in (width * 2, width * 4, width * 6):
        x = conv_bn_relu(x, filters)
        x = conv_bn_relu(x, filters)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(len(EMOTION_LABELS), activation='softmax', name='emotion')(x)
    return keras.Model(inputs, outputs, name=f'mika_face_cnn_w{width}')


# ------------------------------------------------------------------------ evaluation
def predict(model, x: np.ndarray, flip_tta: bool, batch_size: int = 256) -> np.ndarray:
    probabilities = model.predict(x, batch_size=batch_size, verbose=0)
    if flip_tta:
        probabilities = (probabilities + model.predict(
            x[:, :, ::-1], batch_size=batch_size, verbose=0)) / 2.0
    return probabilities


def classification_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict:
    n = len(EMOTION_LABELS)
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_counts, predicted_counts = confusion.sum(1), confusion.sum(0)
    hits = np.diag(confusion).astype(np.float64)
    recall = np.divide(hits, true_counts, out=np.zeros(n), where=true_counts > 0)
    precision = np.divide(hits, predicted_counts, out=np.zeros(n), where=predicted_counts > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n),
                   where=(precision + recall) > 0)
    return {
        'count': int(len(labels)),
        'accuracy': float(hits.sum() / max(len(labels), 1)),
        'macro_f1': float(f1.mean()),
        'per_class_recall': {name: float(r) for name, r in zip(EMOTION_LABELS, recall)},
        'confusion_matrix': confusion.tolist(),
    }


def plot_confusion(confusion: Sequence[Sequence[int]], title: str, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion, dtype=np.float64)
    normalised = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(6.5, 5.5))
    image = axes.imshow(normalised, cmap='Blues', vmin=0, vmax=1)
    for i in range(len(matrix)):
        for j in range(len(matrix)):
            axes.text(j, i, f'{normalised[i, j]:.2f}\n{int(matrix[i, j])}', ha='center',
                      va='center', fontsize=7,
                      color='white' if normalised[i, j] > 0.5 else 'black')
    axes.set_xticks(range(len(EMOTION_LABELS)), EMOTION_LABELS, rotation=45)
    axes.set_yticks(range(len(EMOTION_LABELS)), EMOTION_LABELS)
    axes.set_xlabel('predicted')
    axes.set_ylabel('true')
    axes.set_title(title)
    figure.colorbar(image)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def report_test(models: Sequence, split: Split, spec: PreprocessSpec, out_dir: str,
                tag: str) -> dict:
    """Private-test figures: all images / not duplicated in train, plain / flip TTA."""
    x = prepare(split.images, spec)
    unique = ~split.duplicated_in_train
    report = {}
    for flip_tta in (False, True):
        probabilities = np.mean([predict(m, x, flip_tta) for m in models], axis=0)
        predicted = probabilities.argmax(1)
        variant = 'flip_tta' if flip_tta else 'plain'
        for subset, chosen in (('all', slice(None)), ('not_in_train', unique)):
            metrics = classification_metrics(split.labels[chosen], predicted[chosen])
            name = f'{tag}_{variant}_{subset}'
            png = os.path.join(out_dir, f'confusion_{name}.png')
            plot_confusion(metrics['confusion_matrix'],
                           f'{tag} private_test {variant} {subset}: '
                           f'acc {metrics["accuracy"]:.4f}', png)
            metrics['confusion_png'] = os.path.basename(png)
            report[f'{variant}_{subset}'] = metrics
    return report


# -------------------------------------------------------------------------- training
def train(args) -> dict:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import keras

    from mika_perception.face_model import ModelMetadata, save_model

    keras.utils.set_random_seed(args.seed)
    spec = PreprocessSpec(size=args.size, margin=args.margin, equalisation=args.equalisation,
                          scaling=args.scaling, align_eyes=args.align_eyes)
    splits = load_fer2013(args.fer) if args.fer else {}
    train_split = splits.get('train')
    for folder in args.image_folders:
        extra = load_image_folders(folder, spec.size)
        print(f'{folder}: {len(extra)} images', flush=True)
        train_split = extra if train_split is None else train_split.concatenate(extra)
    if train_split is None:
        raise SystemExit('no training data: give --fer and/or --image-folder')
    if 'public_test' not in splits:
        raise SystemExit('model selection needs FER-2013 public_test (--fer)')
    if args.limit:
        chosen = np.random.default_rng(args.seed).permutation(len(train_split))[:args.limit]
        train_split = Split(train_split.images[chosen], train_split.labels[chosen])
    if args.detector_framed_copies:
        train_split = train_split.concatenate(detector_framed_split(
            train_split, spec, args.detector_framed_copies, args.seed))

    os.makedirs(args.work_dir, exist_ok=True)
    weights = class_weights(train_split.labels, args.class_weight_power)
    print('class weights:', dict(zip(EMOTION_LABELS, np.round(weights, 3))), flush=True)
    sequence = make_training_sequence(train_split, spec, args.batch_size, weights,
                                      len(EMOTION_LABELS), args.seed)
    x_val = prepare(splits['public_test'].images, spec)
    y_val = np.eye(len(EMOTION_LABELS), dtype=np.float32)[splits['public_test'].labels]

    if args.init_model:
        from mika_perception.face_model import load_model
        model, initial = load_model(args.init_model)
        if initial.preprocess.input_shape != spec.input_shape:
            raise SystemExit(f'{args.init_model} takes {initial.preprocess.input_shape}, '
                             f'the preprocessing asked for gives {spec.input_shape}')
    else:
        model = build_model(spec, args.width, args.dropout)
    steps = len(sequence) * args.epochs
    warmup = min(len(sequence), steps // 2)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=args.learning_rate / 10, decay_steps=max(steps - warmup, 1),
        warmup_target=args.learning_rate, warmup_steps=warmup, alpha=0.01)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
        metrics=['accuracy'])
    model.summary(print_fn=lambda line, **_: print(line, flush=True))

    checkpoint = os.path.join(args.work_dir, 'best.weights.h5')
    started = time.time()

    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            print(f'epoch {epoch + 1}/{args.epochs} {time.time() - started:.0f}s '
                  f'loss {logs.get("loss", 0):.4f} acc {logs.get("accuracy", 0):.4f} '
                  f'val_loss {logs.get("val_loss", 0):.4f} '
                  f'val_acc {logs.get("val_accuracy", 0):.4f}', flush=True)

    history = model.fit(
        sequence, epochs=args.epochs, validation_data=(x_val, y_val), verbose=0,
        callbacks=[
            keras.callbacks.ModelCheckpoint(checkpoint, monitor='val_accuracy',
                                            save_best_only=True, save_weights_only=True),
            keras.callbacks.EarlyStopping(monitor='val_accuracy', patience=args.patience,
                                          restore_best_weights=True),
            keras.callbacks.BackupAndRestore(os.path.join(args.work_dir, 'backup')),
            Progress(),
        ])
    training_seconds = time.time() - started
    model.load_weights(checkpoint)
    public_accuracy = float(np.mean(
        predict(model, x_val, False).argmax(1) == splits['public_test'].labels))

    training = {
        'command': ' '.join(['python -m mika_perception.training.train_face'] + sys.argv[1:]),
        'data': 'FER-2013 train' + ''.join(f' + {f}' for f in args.image_folders)
                + (f' + {args.detector_framed_copies} detector-framed copies'
                   if args.detector_framed_copies else ''),
        'epochs_run': len(history.history['loss']),
        'training_seconds': round(training_seconds, 1),
        'public_test_accuracy': public_accuracy,
        'keras_backend': keras.backend.backend(),
        'hyperparameters': {k: v for k, v in vars(args).items()
                            if k not in ('output', 'work_dir', 'fer', 'image_folders')},
    }
    metadata = ModelMetadata(label_names=list(EMOTION_LABELS), preprocess=spec,
                             model_id=os.path.splitext(os.path.basename(args.output))[0]
                             + time.strftime('-%Y%m%d'), training=training)
    save_model(model, args.output, metadata)
    print(f'saved {args.output} ({os.path.getsize(args.output) / 1e6:.2f} MB)', flush=True)

    result = {'model': args.output, 'training': training, 'history': {
        k: [float(v) for v in values] for k, values in history.history.items()}}
    if 'private_test' in splits and not args.skip_private_test:
        result['private_test'] = report_test([model], splits['private_test'], spec,
                                             args.work_dir, 'single')
        for key, metrics in result['private_test'].items():
            print(f'private_test {key}: accuracy {metrics["accuracy"]:.4f} '
                  f'macro-F1 {metrics["macro_f1"]:.4f} (n={metrics["count"]})', flush=True)
    with open(os.path.join(args.work_dir, 'metrics.json'), 'w') as stream:
        json.dump(result, stream, indent=2)
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--fer', default=default_fer_path(),
                        help='fer2013.npz path; empty to train on image folders only')
    parser.add_argument('--image-folder', dest='image_folders', action='append', default=[],
                        help='extra training data laid out <folder>/<emotion>/*.png')
    parser.add_argument('--output', required=True, help='model file (.keras) to write')
    parser.add_argument('--work-dir', default='face_training',
                        help='checkpoints, metrics.json and confusion matrices')
    parser.add_argument('--epochs', type=int, default=35)
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--learning-rate', type=float, default=2e-3)
    parser.add_argument('--weight-decay', type=float, default=1e-4)
    parser.add_argument('--label-smoothing', type=float, default=0.1)
    parser.add_argument('--class-weight-power', type=float, default=0.5,
                        help='0: no class weights, 0.5: softened, 1: fully balanced')
    parser.add_argument('--patience', type=int, default=10,
                        help='early stopping on public_test accuracy')
    parser.add_argument('--width', type=int, default=32, help='filters of the first conv')
    parser.add_argument('--dropout', type=float, default=0.4)
    parser.add_argument('--size', type=int, default=48)
    parser.add_argument('--margin', type=float, default=0.1)
    parser.add_argument('--equalisation', default='hist', choices=('none', 'hist', 'clahe'))
    parser.add_argument('--scaling', default='symmetric', choices=('unit', 'symmetric'))
    parser.add_argument('--align-eyes', action='store_true',
                        help="turn node crops so the detector's eyes lie level (stored in "
                             'the model file; see PreprocessSpec.align_eyes)')
    parser.add_argument('--detector-framed-copies', type=int, default=0,
                        help='add N copies of every training face rendered into a camera '
                             "frame and cut out again by the node's detector and framing")
    parser.add_argument('--init-model', default='',
                        help='start from this model file (fine-tuning) instead of new weights')
    parser.add_argument('--limit', type=int, default=0, help='first N train images (smoke)')
    parser.add_argument('--skip-private-test', action='store_true',
                        help='for hyper-parameter searches: never look at private_test')
    parser.add_argument('--seed', type=int, default=1)
    return parser.parse_args(argv)


def main(argv=None):
    train(parse_args(argv))


if __name__ == '__main__':
    main()
