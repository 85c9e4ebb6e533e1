"""Fine-tune the shipped face model on one person's sessions; an ensemble as one file.

ROS-free. Starts from the shipped model (or any face model file): its feature layers are
frozen and a new head (dropout, an optional hidden layer, softmax; L2 on its weights) is
trained, warm-started from the model's own output layer where the head has no hidden
layer, so training starts from the generic model's answers. Then, optionally, the
convolution blocks are unfrozen from the top one block at a time, each stage with a lower
learning rate; batch normalisation stays frozen (its statistics come from 28k faces, not
from a few hundred frames). Training data only are augmented (about 10 degrees of
rotation, 0.1 shift and zoom, flips), classes are weighted, each stage follows a cosine
learning-rate schedule and stops early on a validation session.

Samples are split by session only (:func:`split_by_session`): test and validation
sessions never contribute a frame to training. Several variants (learning rate, dropout,
hidden units, L2, unfrozen stages) can be trained and saved as one model whose output is
the average of theirs. The file is written with
:func:`mika_perception.face_model.save_model`: same preprocessing spec and label order as
the base, plus where it came from, so the face node loads it like any other model.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_personal.face_data import FaceDataset
from mika_personal.sessions import LeakageError, check_disjoint, group_split
from mika_personal.tuning import (
    SessionSplit, TuningSettings, train_in_stages, unfreeze_plan)

#: Layers whose outputs separate the convolution blocks unfrozen one at a time.
POOLING_LAYERS = ('MaxPooling2D', 'AveragePooling2D')


@dataclass(frozen=True)
class TuningConfig(TuningSettings):
    """One fine-tuning run; an ensemble trains several, each with some fields changed.

    The defaults were chosen on the validation session of ``studies/face_experiment.py``
    (never on its test sessions): against 1e-3 and one unfrozen block, a head rate of 1e-2
    and two unfrozen blocks lowered the validation loss from 0.94 to 0.57.
    """

    head_epochs: int = 40
    unfreeze_stages: int = 2          # convolution blocks unfrozen after the head (0: none)
    unfreeze_epochs: int = 20         # per stage
    learning_rate: float = 1e-2       # head stage
    unfreeze_lr_factor: float = 0.1   # each unfrozen stage: previous rate times this
    dense_units: int = 0              # hidden units in the head (0: softmax on features)
    dropout: float = 0.4
    l2: float = 1e-4
    label_smoothing: float = 0.1
    class_weight_power: float = 0.5
    batch_size: int = 32
    patience: int = 8                 # epochs without a better validation loss
    max_rotation_deg: float = 10.0
    max_shift: float = 0.1
    max_zoom: float = 0.1
    seed: int = 0

    def __post_init__(self):
        self.check_common()
        if self.l2 < 0 or self.dense_units < 0:
            raise ValueError('l2 and dense_units must be >= 0')


# ----------------------------------------------------------------------------- splits
def split_by_session(dataset: FaceDataset, test_sessions: Sequence[str] = (),
                     validation_sessions: Optional[Sequence[str]] = None,
                     test_dataset: Optional[FaceDataset] = None) -> SessionSplit:
    """Train / validation / test by session id only; LeakageError where a recording would
    be on two sides, or a named session has no samples.

    ``validation_sessions`` None: the last training session (in id order) when there are
    at least two, else none (then training runs its full epochs, without early stopping).
    ``test_dataset``: test samples from another file; its sessions must not be in training.
    """
    test_sessions = list(test_sessions)
    rest, test = np.arange(len(dataset)), None
    if test_sessions:
        rest, test_rows = group_split(dataset.session_ids, test_sessions)
        test = dataset.subset(test_rows)
    if test_dataset is not None:
        if test_dataset.spec != dataset.spec:
            raise ValueError(f'the test dataset was prepared with {test_dataset.spec}, the '
                             f'training dataset with {dataset.spec}')
        test = test_dataset if test is None else FaceDataset.concatenate(
            [test, test_dataset], test.info)
    remaining = sorted(set(dataset.session_ids[rest].tolist()))
    if validation_sessions is None:
        validation_sessions = remaining[-1:] if len(remaining) >= 2 else []
    validation_sessions = list(validation_sessions)
    if test is not None:
        check_disjoint(validation_sessions, test.session_ids.tolist())
    validation = None
    if validation_sessions:
        train_rows, validation_rows = group_split(dataset.session_ids[rest], validation_sessions)
        validation = dataset.subset(rest[validation_rows])
        rest = rest[train_rows]
    train = dataset.subset(rest)
    if test is not None:
        check_disjoint(train.session_ids.tolist(), test.session_ids.tolist())
    if validation is not None:
        check_disjoint(train.session_ids.tolist(), validation.session_ids.tolist())
    return SessionSplit(train, validation, test)


# ----------------------------------------------------------------------------- model
def feature_layers(base) -> Tuple[object, List[List[object]]]:
    """(layer whose output are the features, convolution blocks from input to output).

    The base must end in a softmax Dense over flat features (optionally after dropout),
    as every model of ``train_face`` and of this module (a single one, not an ensemble)
    does.
    """
    import keras
    head = base.layers[-1]
    if not isinstance(head, keras.layers.Dense) or head.units != len(EMOTION_LABELS):
        raise ValueError(f'base model {base.name}: its last layer is {type(head).__name__}, '
                         f'not a Dense of {len(EMOTION_LABELS)} units; fine-tune a single '
                         'model (an ensemble file cannot be a base)')
    inner = [layer for layer in base.layers[:-1] if not isinstance(layer, keras.layers.Dropout)]
    features = inner[-1]
    if len(features.output.shape) != 2:
        raise ValueError(f'base model {base.name}: the input of its output layer is not a '
                         f'flat feature vector ({features.output.shape})')
    blocks: List[List[object]] = [[]]
    for layer in inner:
        if type(layer).__name__ in POOLING_LAYERS:
            blocks.append([])
        elif layer.weights and not isinstance(layer, keras.layers.BatchNormalization):
            blocks[-1].append(layer)
    return features, [block for block in blocks if block]


def build_personal_model(base, config: TuningConfig):
    """(model, convolution blocks): the base's feature layers under a new head, all of the
    base frozen."""
    import keras
    from keras import layers, regularizers

    features, blocks = feature_layers(base)
    for layer in base.layers:
        layer.trainable = False
    regulariser = regularizers.L2(config.l2) if config.l2 > 0 else None
    x = layers.Dropout(config.dropout, name='head_dropout')(features.output)
    if config.dense_units:
        x = layers.Dense(config.dense_units, activation='relu', name='head_dense',
                         kernel_regularizer=regulariser)(x)
        x = layers.Dropout(config.dropout, name='head_dense_dropout')(x)
    output = layers.Dense(len(EMOTION_LABELS), activation='softmax', name='emotion',
                          kernel_regularizer=regulariser)
    model = keras.Model(base.inputs, output(x), name=f'{base.name}_personal')
    if not config.dense_units:  # start from the generic model's own answers
        output.set_weights(base.layers[-1].get_weights())
    return model, blocks


def _training_batches(crops: np.ndarray, labels: np.ndarray, weights: np.ndarray, spec,
                      config: TuningConfig):
    import keras

    from mika_perception.preprocessing import preprocess_face
    from mika_perception.training.train_face import augment

    classes = len(EMOTION_LABELS)

    class AugmentedCrops(keras.utils.PyDataset):
        """Freshly augmented, shuffled batches of the training crops every epoch."""

        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(config.seed)
            self.order = self.rng.permutation(len(labels))

        def __len__(self):
            return math.ceil(len(labels) / config.batch_size)

        def __getitem__(self, index):
            chosen = self.order[index * config.batch_size:(index + 1) * config.batch_size]
            x = np.empty((len(chosen),) + spec.input_shape, np.float32)
            for i, j in enumerate(chosen):
                x[i] = preprocess_face(augment(crops[j], self.rng, config.max_shift,
                                               config.max_rotation_deg, config.max_zoom),
                                       None, spec)
            y = np.eye(classes, dtype=np.float32)[labels[chosen]]
            return x, y, weights[labels[chosen]].astype(np.float32)

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(labels))

    return AugmentedCrops()


def fine_tune(base_path: str, split: SessionSplit, config: TuningConfig, log=print):
    """(trained keras model, base metadata, history per stage)."""
    import keras

    from mika_perception.face_model import load_model
    from mika_perception.training.train_face import class_weights

    base, metadata = load_model(base_path)
    if metadata.preprocess != split.train.spec:
        raise ValueError(f'dataset prepared with {split.train.spec}, base model {base_path} '
                         f'expects {metadata.preprocess}: prepare the sessions with this model')
    if len(split.train) == 0:
        raise ValueError('no training samples')
    keras.utils.set_random_seed(config.seed)
    to_model_order = np.array([metadata.label_names.index(n) for n in EMOTION_LABELS])
    y = to_model_order[split.train.label_indices]
    weights = class_weights(y, config.class_weight_power)
    batches = _training_batches(split.train.crops, y, weights, metadata.preprocess, config)
    validation = None
    if split.validation is not None and len(split.validation):
        validation = (split.validation.inputs(), np.eye(len(EMOTION_LABELS), dtype=np.float32)[
            to_model_order[split.validation.label_indices]])
    model, blocks = build_personal_model(base, config)
    history = train_in_stages(model, unfreeze_plan(config, blocks[::-1], 'block(s)'),
                              (batches,), len(batches), validation, config,
                              from_logits=False, log=log)
    return model, metadata, history


def average_models(members: Sequence, input_shape, name: str):
    """One functional model whose output is the mean of the members' outputs."""
    import keras
    inputs = keras.Input(input_shape, name='face')
    outputs = [keras.Model(member.input, member.output, name=f'member_{index}')(inputs)
               for index, member in enumerate(members)]
    return keras.Model(inputs, keras.layers.Average(name='emotion')(outputs), name=name)


# ----------------------------------------------------------------------------- evaluation
def probabilities(model_path: str, dataset: FaceDataset) -> np.ndarray:
    """(N, 7) probabilities in :data:`EMOTION_LABELS` order, through the node's classifier
    (Keras runtime; the TFLite runtime equals it within its parity tolerance)."""
    from mika_perception.face_model import FaceEmotionClassifier
    classifier = FaceEmotionClassifier([model_path], runtime='keras')
    return classifier.classify_batch(dataset.inputs())


def compare_on_test(base_path: str, personal_path: str, test: FaceDataset,
                    out_dir: Optional[Path], training: Dict) -> Dict:
    """Generic versus personal on the held-out sessions (:func:`mika_personal.report.compare`)."""
    from mika_personal.report import compare
    sessions = sorted(set(test.session_ids.tolist()))
    return compare(test.labels, probabilities(base_path, test),
                   probabilities(personal_path, test), EMOTION_LABELS, out_dir,
                   title=f'Face: generic versus personal on held-out sessions '
                         f'{", ".join(sessions)}',
                   name='face', groups=test.session_ids,
                   info={'generic': base_path, 'personal': personal_path,
                         'sessions': training['sessions'], 'samples': training['samples']})


# ----------------------------------------------------------------------------- the command
def tune_and_save(dataset: FaceDataset, split: SessionSplit, base_path: str, output: str,
                  configs: Sequence[TuningConfig], provenance: Dict, log=print) -> Dict:
    """Train one model per config, save it (or their average) to ``output``; returns the
    training record stored in the file."""
    import keras

    from mika_perception.face_model import ModelMetadata, save_model

    members, records, metadata = [], [], None
    for number, config in enumerate(configs):
        if len(configs) > 1:
            log(f'variant {number + 1}/{len(configs)}: {dataclasses.asdict(config)}')
        model, metadata, history = fine_tune(base_path, split, config, log)
        members.append(model)
        records.append({'config': dataclasses.asdict(config), 'stages': history})
    model_id = Path(output).stem + time.strftime('-%Y%m%d')
    model = members[0] if len(members) == 1 else average_models(
        members, metadata.preprocess.input_shape, f'{model_id}_ensemble')
    training = {
        'kind': 'personal fine-tuning' + (f', average of {len(members)} variants'
                                          if len(members) > 1 else ''),
        'base_model': str(base_path), 'base_model_id': metadata.model_id,
        'sessions': split.sessions(), 'samples': split.sizes(),
        'keras_backend': keras.backend.backend(), 'variants': records, **provenance}
    save_model(model, output, ModelMetadata(list(metadata.label_names), metadata.preprocess,
                                            model_id, training=training))
    log(f'saved {output} ({os.path.getsize(output) / 1e6:.2f} MB)')
    return training


def add_face_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of :func:`main_face` (``fine_tune --modality face``)."""
    from mika_perception.face_model import DEFAULT_MODEL_PATH
    defaults = TuningConfig()
    add = parser.add_argument
    add('--dataset', type=Path, required=True,
        help='face dataset from prepare_sessions (face_dataset.npz)')
    add('--output', required=True, help='model file to write (.keras)')
    add('--test-sessions', nargs='*', default=[],
        help='session ids held out for the generic-versus-personal comparison (never '
             'trained on); none: train on all sessions, no comparison')
    add('--validation-sessions', nargs='*', default=None,
        help='session ids for early stopping (default: the last training session when '
             'there are two or more; the option alone: none)')
    add('--test-dataset', type=Path, default=None,
        help='test samples from another dataset file (none of its sessions may be '
             'in training)')
    add('--report-dir', type=Path, default=None,
        help='write the generic-versus-personal report here (face.json, face.md, '
             'face_confusion.png)')
    add('--base-model', default=str(DEFAULT_MODEL_PATH),
        help='face model to start from (default: the shipped model)')
    add('--head-epochs', type=int, default=defaults.head_epochs,
        help='epochs of the head stage, feature layers frozen (default %(default)s)')
    add('--unfreeze-stages', type=int, default=defaults.unfreeze_stages,
        help='convolution blocks unfrozen after the head, one stage each (0: head only; '
             'default %(default)s)')
    add('--unfreeze-epochs', type=int, default=defaults.unfreeze_epochs,
        help='epochs per unfrozen stage (default %(default)s)')
    add('--learning-rate', type=float, default=defaults.learning_rate,
        help='head stage, cosine decay to a tenth (default %(default)s)')
    add('--unfreeze-lr-factor', type=float, default=defaults.unfreeze_lr_factor,
        help='learning rate of each unfrozen stage: the previous one times this '
             '(default %(default)s)')
    add('--dense-units', type=int, default=defaults.dense_units,
        help='hidden units in the new head (0: softmax on the features, warm-started)')
    add('--dropout', type=float, default=defaults.dropout,
        help='dropout of the new head (default %(default)s)')
    add('--l2', type=float, default=defaults.l2,
        help='L2 on the new head\'s weights (default %(default)s)')
    add('--label-smoothing', type=float, default=defaults.label_smoothing,
        help='(default %(default)s)')
    add('--class-weight-power', type=float, default=defaults.class_weight_power,
        help='0: no class weights, 0.5: softened inverse frequency, 1: balanced '
             '(default %(default)s)')
    add('--batch-size', type=int, default=defaults.batch_size, help='(default %(default)s)')
    add('--patience', type=int, default=defaults.patience,
        help='epochs without a better validation loss before a stage stops (the best '
             'epoch\'s weights are kept; default %(default)s)')
    add('--seed', type=int, default=defaults.seed)
    add('--variant', action='append', default=[], metavar='NAME=VALUE,...',
        help='train an ensemble: one variant per option, each the settings above with '
             'these changed (e.g. learning_rate=3e-4,dropout=0.5,dense_units=64); the '
             'saved file averages them')
    return parser


def main_face(args) -> int:
    """Fine-tune on a prepared face dataset; compare with the base on the test sessions."""
    from mika_personal.report import score_lines
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    try:
        dataset = FaceDataset.load(args.dataset)
        test_dataset = FaceDataset.load(args.test_dataset) if args.test_dataset else None
        split = split_by_session(dataset, args.test_sessions, args.validation_sessions,
                                 test_dataset)
        base = TuningConfig.from_args(args)
        configs = [base.with_changes(v) for v in args.variant] or [base]
    except (LeakageError, ValueError) as error:
        print(f'fine_tune: {error}', file=sys.stderr)
        return 2
    for name, sessions in split.sessions().items():
        part = getattr(split, name)
        counts = dict(zip(*np.unique(part.labels, return_counts=True))) if part else {}
        print(f'{name} sessions: {", ".join(sessions) or "none"}; faces: '
              + (', '.join(f'{label} {counts.get(label, 0)}' for label in EMOTION_LABELS)
                 if part else 'none'))
    if split.validation is None:
        print('no validation session: every stage runs its full epochs (no early stopping)')
    provenance = {'dataset': str(args.dataset), 'dataset_info': dataset.info,
                  'command': ' '.join(['fine_tune'] + sys.argv[1:])}
    try:
        training = tune_and_save(dataset, split, args.base_model, args.output, configs,
                                 provenance)
    except (RuntimeError, ValueError) as error:  # a model file that does not load or fit
        print(f'fine_tune: {error}', file=sys.stderr)
        return 2
    if split.test is None:
        print('no test sessions: nothing to compare (the model was trained on all sessions)')
        return 0
    report = compare_on_test(args.base_model, args.output, split.test, args.report_dir,
                             training)
    print('\n'.join(score_lines(report, 'held-out faces')))
    print(f'McNemar exact p = {report["mcnemar_p"]:.3g}'
          + (f'; report in {args.report_dir}' if args.report_dir else ''))
    return 0
