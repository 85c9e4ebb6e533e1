"""Fine-tune the shipped voice model on one person's sessions; an ensemble as one file.

ROS-free. The base (the shipped model or any voice model file; an ensemble of networks
averaged in one file is fine-tuned as a whole) keeps its feature layers frozen while the
output layer of each of its networks is trained, warm-started, so training starts from the
generic model's answers (or, with ``head_units``, a new hidden layer and output are
trained on its top features). Then, optionally, its dense layers are unfrozen from the top
one per stage, each stage with a lower learning rate. Trained weights can be pulled toward
the generic model's values (``l2_sp``: an L2 penalty on the distance from the starting
point, so a few utterances refine the model rather than replace it); dropout as in the
base; classes weighted; a cosine learning-rate schedule per stage; early stopping on a
validation session when there is one.

Normalisation as the node applies it: training rows are standardised per person (the
generic model was trained per speaker); augmented copies (speed, pitch, shift, noise, made
by ``prepare_sessions``) are training rows only, each round a virtual speaker as in the
generic training. The saved file's ``population_mean`` / ``within_speaker_std`` are the
person's own statistics, so the node's running normaliser starts from that person's voice
and moves with the stream as usual. Validation and test sessions are standardised the way
the node does it, utterance by utterance in time order (:func:`node_rows`).

The file is written with :func:`mika_voice.voice_model.save_voice_model`: same features
and label order as the base, plus where it came from (base model, sessions, split, settings),
so the voice node loads it like any other model.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_personal.sessions import LeakageError, check_disjoint, group_split
from mika_personal.tuning import (
    SessionSplit, TuningSettings, train_in_stages, unfreeze_plan)
from mika_personal.voice_data import VoiceDataset

#: Validation sessions are taken by default only from this many training sessions on:
#: with fewer, holding one out costs more training data than early stopping is worth.
MIN_SESSIONS_FOR_VALIDATION = 3
#: The temperature is refitted on the validation sessions only when they hold this many
#: utterances; with fewer the base's temperature is kept (a fit on a handful is noise).
MIN_CALIBRATION_UTTERANCES = 30


@dataclass(frozen=True)
class VoiceTuningConfig(TuningSettings):
    """One fine-tuning run; an ensemble trains several, each with some fields changed.

    Defaults: the boldest of three settings compared on RAVDESS development actors, which
    also did best on the test actors (``python studies/ravdess_study.py``, results in
    ``studies/results/ravdess_personal_voice.md``). Those tests are second takes
    of the sentences trained on, which favours bold adaptation; for free speech record a
    third session, so that early stopping has a validation session, or set ``l2_sp``.
    """

    head_epochs: int = 40
    unfreeze_stages: int = 3          # dense layers unfrozen after the head (0: none)
    unfreeze_epochs: int = 20         # per stage
    learning_rate: float = 3e-3       # head stage
    unfreeze_lr_factor: float = 0.3   # each unfrozen stage: previous rate times this
    head_units: int = 0               # new hidden layer in the head (0: the base's output)
    dropout: float = 0.5              # rate of every dropout layer while fine-tuning
    l2_sp: float = 0.0                # pull of trained weights toward the base's
    label_smoothing: float = 0.1
    batch_size: int = 32
    patience: int = 8                 # epochs without a better validation loss
    use_augmented: bool = True
    seed: int = 0

    def __post_init__(self):
        self.check_common()
        if self.l2_sp < 0 or self.head_units < 0:
            raise ValueError('l2_sp and head_units must be >= 0')


# ----------------------------------------------------------------------------- splits
def split_by_session(dataset: VoiceDataset, test_sessions: Sequence[str] = (),
                     validation_sessions: Optional[Sequence[str]] = None) -> SessionSplit:
    """Train / validation / test by session id only; LeakageError where a recording would
    be on two sides, or a named session has no samples.

    ``validation_sessions`` None: the last training session (in id order) when at least
    :data:`MIN_SESSIONS_FOR_VALIDATION` remain for training, else none (every stage then
    runs its full epochs).
    """
    test_sessions, rest, test = list(test_sessions), np.arange(len(dataset)), None
    if validation_sessions is not None:
        check_disjoint(validation_sessions, test_sessions)
    if test_sessions:
        rest, test_rows = group_split(dataset.session_ids, test_sessions)
        test = dataset.subset(test_rows)
    remaining = sorted(set(dataset.session_ids[rest].tolist()))
    if validation_sessions is None:
        validation_sessions = (remaining[-1:] if len(remaining) >= MIN_SESSIONS_FOR_VALIDATION
                               else [])
    validation = None
    if validation_sessions:
        train_rows, validation_rows = group_split(dataset.session_ids[rest],
                                                  list(validation_sessions))
        validation = dataset.subset(rest[validation_rows])
        rest = rest[train_rows]
    train = dataset.subset(rest)
    for part in (test, validation):
        if part is not None:
            check_disjoint(train.session_ids.tolist(), part.session_ids.tolist())
    if test is not None and validation is not None:
        check_disjoint(validation.session_ids.tolist(), test.session_ids.tolist())
    return SessionSplit(train, validation, test)


# ----------------------------------------------------------------------------- rows
def person_statistics(dataset: VoiceDataset) -> Tuple[np.ndarray, np.ndarray]:
    """(mean, within-person spread) of the raw features: the personal model's prior for
    the node's running normaliser (for one person: that person's mean and spread)."""
    from mika_voice.voice_model import population_statistics
    return population_statistics(dataset.features, dataset.persons)


def training_rows(dataset: VoiceDataset, use_augmented: bool) -> Tuple[np.ndarray, np.ndarray]:
    """(standardised rows, label names): originals per person, each augmentation round of
    a person as its own virtual speaker, as the generic model was trained."""
    from mika_voice.voice_model import SpeakerStandardiser
    raw, groups, labels = [dataset.features], [dataset.persons], [dataset.labels]
    if use_augmented:
        for round_index in range(dataset.rounds):
            raw.append(dataset.augmented[round_index])
            groups.append(np.char.add(dataset.persons, f'#aug{round_index}'))
            labels.append(dataset.labels)
    return (SpeakerStandardiser.transform(np.concatenate(raw), np.concatenate(groups)),
            np.concatenate(labels))


def node_rows(dataset: VoiceDataset, prior_mean, prior_std, prior_weight: float,
              half_life: float) -> np.ndarray:
    """What the node computes: each session's utterances in time order through a fresh
    :class:`RunningStandardiser` with the model's prior, each standardised right after
    its update."""
    from mika_voice.voice_model import RunningStandardiser
    result = np.empty(dataset.features.shape, dtype=np.float32)
    for session in sorted(set(dataset.session_ids.tolist())):
        rows = np.flatnonzero(dataset.session_ids == session)
        normaliser = RunningStandardiser(prior_mean, prior_std, prior_weight, half_life)
        for index in rows[np.argsort(dataset.start_s[rows], kind='stable')]:
            normaliser.update(dataset.features[index])
            result[index] = normaliser.transform(dataset.features[index])
    return result


def person_rows(dataset: VoiceDataset) -> np.ndarray:
    """Each person's utterances standardised with all of that person's utterances here
    (the "offline" figure of the model card: the normaliser fully adapted to the voice)."""
    from mika_voice.voice_model import SpeakerStandardiser
    return SpeakerStandardiser.transform(dataset.features, dataset.persons)


# ----------------------------------------------------------------------------- model
def _towards_weights(anchor: np.ndarray, strength: float):
    """L2-SP: ``strength * sum((w - anchor)^2)``; used while training only (the saved
    model carries no regulariser)."""
    import keras

    class TowardsWeights(keras.regularizers.Regularizer):
        def __init__(self):
            self.anchor = keras.ops.convert_to_tensor(anchor, dtype='float32')

        def __call__(self, weights):
            return strength * keras.ops.sum(keras.ops.square(weights - self.anchor))

        def get_config(self):
            return {'strength': strength}

    return TowardsWeights()


def networks(base) -> List:
    """The networks of a model file: the members of an averaged ensemble, or the model."""
    import keras
    members = [layer for layer in base.layers if isinstance(layer, keras.Model)]
    return members or [base]


def _clone(member, name: str, dense_options, dropout: Optional[float]):
    """A copy of ``member`` with its weights, each Dense rebuilt with
    ``dense_options(layer)`` and each Dropout at ``dropout`` (None: as it was)."""
    import keras

    def rebuild(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.Dense):
            config.update(dense_options(layer))
        elif isinstance(layer, keras.layers.Dropout) and dropout is not None:
            config['rate'] = dropout
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(member, clone_function=rebuild)
    clone.set_weights(member.get_weights())
    return keras.Model(clone.inputs[0], clone.outputs[0], name=name)


def _dense_layers(model) -> List:
    import keras
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def build_training_networks(base, config: VoiceTuningConfig, first_index: int = 0):
    """(networks, head layers, dense blocks from the top) ready to fine-tune: copies of
    the base's networks with L2-SP on every Dense, all frozen but the heads."""
    import keras
    from keras import layers

    def l2_sp(layer):
        if config.l2_sp <= 0:
            return {}
        return {'kernel_regularizer': _towards_weights(layer.get_weights()[0], config.l2_sp)}

    result, heads, blocks = [], [], []
    for offset, member in enumerate(networks(base)):
        name = f'personal_{first_index + offset}'
        network = _clone(member, name, l2_sp, config.dropout)
        dense = _dense_layers(network)
        if len(dense) < 1 or dense[-1].units != len(EMOTION_LABELS):
            raise ValueError(f'base network {member.name} does not end in a Dense of '
                             f'{len(EMOTION_LABELS)} logits')
        for layer in network.layers:
            layer.trainable = False
        head = [dense[-1]]
        if config.head_units:
            plain = keras.regularizers.L2(config.l2_sp) if config.l2_sp > 0 else None
            x = layers.Dense(config.head_units, activation='relu', name='head_dense',
                             kernel_regularizer=plain)(dense[-1].input)
            x = layers.Dropout(config.dropout, name='head_dropout')(x)
            output = layers.Dense(len(EMOTION_LABELS), name='head_logits',
                                  kernel_regularizer=plain)
            network = keras.Model(network.inputs[0], output(x), name=name)
            head = [network.get_layer('head_dense'), output]
        for layer in head:
            layer.trainable = True
        result.append(network)
        heads.append(head)
        blocks.append(list(reversed(dense[:-1])))
    return result, heads, blocks


def plain_copy(network, name: str):
    """The trained network without its training-time regularisers: built-in layers only,
    so the file loads with ``safe_mode=True``."""
    return _clone(network, name, lambda layer: {'kernel_regularizer': None}, None)


def _average(inputs_like, members):
    import keras
    inputs = keras.Input(shape=inputs_like.input_shape[1:], name='standardised_features')
    outputs = [member(inputs) for member in members]
    logits = outputs[0] if len(outputs) == 1 else keras.layers.Average()(outputs)
    return keras.Model(inputs, logits, name='personal_training')


def _model_order_targets(labels: np.ndarray, label_names: Sequence[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(label_names)}
    return np.array([index[label] for label in labels], dtype=np.int64)


@dataclass
class TunedNetworks:
    """The fine-tuned networks of one config (not yet averaged with other variants)."""

    members: List
    history: List[Dict]
    config: VoiceTuningConfig


def fine_tune(base_classifier, split: SessionSplit, config: VoiceTuningConfig,
              values: Dict, first_index: int = 0, log=print) -> TunedNetworks:
    """Fine-tune copies of the base classifier's networks on ``split.train``.

    ``values``: the voice node's parameter values (its normaliser settings standardise the
    validation sessions as the node would).
    """
    import keras
    from mika_voice.training.train_voice import class_weights

    metadata = base_classifier.metadata
    check_features(split.train, metadata)
    if len(split.train) == 0:
        raise ValueError('no training utterances')
    keras.utils.set_random_seed(config.seed)
    x, labels = training_rows(split.train, config.use_augmented)
    y = _model_order_targets(labels, metadata.label_names)
    targets = np.eye(len(metadata.label_names), dtype=np.float32)[y]
    validation = None
    if split.validation is not None and len(split.validation):
        mean, std = person_statistics(split.train)
        x_val = node_rows(split.validation, mean, std, values['normaliser_prior_weight'],
                          values['normaliser_half_life'])
        y_val = _model_order_targets(split.validation.labels, metadata.label_names)
        validation = (x_val, np.eye(len(metadata.label_names), dtype=np.float32)[y_val])
    members, heads, blocks = build_training_networks(base_classifier.model, config,
                                                     first_index)
    model = _average(base_classifier.model, members)
    stages = unfreeze_plan(config, [list(layers) for layers in zip(*blocks)],
                           'dense layer(s)')
    history = train_in_stages(model, stages, (x, targets),
                              int(np.ceil(len(x) / config.batch_size)), validation, config,
                              from_logits=True, log=log, batch_size=config.batch_size,
                              class_weight=class_weights(y), shuffle=True)
    plain = [plain_copy(member, member.name) for member in members]
    return TunedNetworks(plain, history, config)


def check_features(dataset: VoiceDataset, metadata) -> None:
    if (dataset.feature_set, dataset.feature_version) != (metadata.feature_set,
                                                          metadata.feature_version):
        raise ValueError(f'dataset features {dataset.feature_set} {dataset.feature_version}, '
                         f'base model {metadata.feature_set} {metadata.feature_version}: '
                         'prepare the sessions with this model')


def personal_model(base_classifier, tuned: Sequence[TunedNetworks], split: SessionSplit,
                   values: Dict, model_id: str, provenance: Dict, log=print):
    """A :class:`VoiceEmotionClassifier` (not yet saved) averaging every tuned network,
    with the person's statistics as the normaliser's prior and its temperature."""
    from mika_voice.training.train_voice import average_models
    from mika_voice.voice_model import (VoiceEmotionClassifier, VoiceModelMetadata,
                                        fit_temperature)

    base = base_classifier.metadata
    members = [member for run in tuned for member in run.members]
    model = average_models(members)
    mean, std = person_statistics(split.train)
    temperature, calibration = base.temperature, 'kept from the base model'
    validation = split.validation
    if validation is not None and len(validation) >= MIN_CALIBRATION_UTTERANCES:
        rows = node_rows(validation, mean, std, values['normaliser_prior_weight'],
                         values['normaliser_half_life'])
        logits = np.asarray(model.predict_on_batch(rows), dtype=np.float64)
        temperature = fit_temperature(logits, _model_order_targets(validation.labels,
                                                                   base.label_names))
        calibration = f'fitted on {len(validation)} validation utterances'
    log(f'temperature {temperature:.3f} ({calibration})')
    training = {
        'kind': 'personal fine-tuning' + (f', average of {len(tuned)} variants'
                                          if len(tuned) > 1 else ''),
        'base_model': str(base_classifier.path), 'base_model_id': base.model_id,
        'base_training_data': base.training.get('data', ''),
        'persons': sorted(set(split.train.persons.tolist())),
        'sessions': split.sessions(),
        'utterances': split.sizes(),
        'augment_rounds_used': split.train.rounds if tuned[0].config.use_augmented else 0,
        'temperature': calibration,
        'networks': len(members),
        'variants': [{'config': dataclasses.asdict(run.config), 'stages': run.history}
                     for run in tuned],
        **provenance}
    metadata = VoiceModelMetadata(
        feature_version=base.feature_version, feature_set=base.feature_set,
        feature_names=list(base.feature_names), sample_rate=base.sample_rate,
        label_names=list(base.label_names), population_mean=mean.tolist(),
        within_speaker_std=std.tolist(), temperature=float(temperature), model_id=model_id,
        normalisation=('per-person standardisation (fine-tuning); node: running per-stream, '
                       "starting from the person's statistics"),
        training=training)
    return VoiceEmotionClassifier(model, metadata)


def tune(base_classifier, split: SessionSplit, configs: Sequence[VoiceTuningConfig],
         values: Dict, model_id: str, provenance: Dict, log=print):
    """Train one set of networks per config; the classifier averaging them all."""
    tuned, first = [], 0
    for number, config in enumerate(configs):
        if len(configs) > 1:
            log(f'variant {number + 1}/{len(configs)}: {dataclasses.asdict(config)}')
        run = fine_tune(base_classifier, split, config, values, first, log)
        first += len(run.members)
        tuned.append(run)
    return personal_model(base_classifier, tuned, split, values, model_id, provenance, log)


# ----------------------------------------------------------------------------- evaluation
def probabilities(classifier, dataset: VoiceDataset, values: Dict, mode: str = 'node'
                  ) -> np.ndarray:
    """Calibrated probabilities (EMOTION_LABELS order) of ``classifier`` on ``dataset``.

    ``mode`` 'node': each session replayed through the node's running normaliser with the
    model's own prior; 'person': standardised with all of the person's utterances here.
    """
    if mode == 'node':
        meta = classifier.metadata
        rows = node_rows(dataset, meta.population_mean, meta.within_speaker_std,
                         values['normaliser_prior_weight'], values['normaliser_half_life'])
    elif mode == 'person':
        rows = person_rows(dataset)
    else:
        raise ValueError(f"mode must be 'node' or 'person', got {mode!r}")
    return classifier.predict_proba(rows)


# ----------------------------------------------------------------------------- the command
def add_voice_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of :func:`main_voice` (``fine_tune --modality voice``)."""
    from mika_voice.voice_parameters import default_model_path
    defaults = VoiceTuningConfig()
    parser.add_argument('--dataset', type=Path, nargs='+', required=True,
                        help='voice dataset(s) from prepare_sessions (voice_dataset.npz); '
                             'several files are joined (a session in two files is refused)')
    parser.add_argument('--output', required=True, help='model file to write (.keras)')
    parser.add_argument('--test-sessions', nargs='*', default=[],
                        help='session ids held out for the generic-versus-personal '
                             'comparison (never trained on); none: train on all sessions')
    parser.add_argument('--validation-sessions', nargs='*', default=None,
                        help='session ids for early stopping and calibration (default: the '
                             f'last training session when {MIN_SESSIONS_FOR_VALIDATION} or '
                             'more remain; give none with an empty list)')
    parser.add_argument('--report-dir', type=Path, default=None,
                        help='write the generic-versus-personal report here (voice.json, '
                             'voice.md, voice_confusion.png)')
    parser.add_argument('--base-model', default=default_model_path(),
                        help='voice model to start from (default: the shipped model)')
    parser.add_argument('--params', type=Path, default=None,
                        help="the launch params YAML: the voice node's normaliser settings "
                             'for validation and evaluation (default: its defaults)')
    for field_ in dataclasses.fields(VoiceTuningConfig):
        if field_.name == 'use_augmented':
            parser.add_argument('--no-augmentation', dest='use_augmented',
                                action='store_false',
                                help='train on the original utterances only')
            continue
        kind = int if field_.type in (int, 'int') else float
        parser.add_argument('--' + field_.name.replace('_', '-'), type=kind,
                            default=getattr(defaults, field_.name),
                            help=_HELP.get(field_.name))
    parser.add_argument('--variant', action='append', default=[], metavar='NAME=VALUE,...',
                        help='train an ensemble: one variant per option, each the settings '
                             'above with these changed (e.g. learning_rate=3e-4,dropout=0.3,'
                             'head_units=64); the saved file averages them')
    return parser


_HELP = {
    'head_epochs': 'epochs training the output layers only',
    'unfreeze_stages': 'dense layers unfrozen after the head, from the top, one per stage',
    'unfreeze_epochs': 'epochs per unfrozen stage',
    'unfreeze_lr_factor': 'learning rate of each unfrozen stage: the previous one times this',
    'head_units': "hidden units of a new head (0: the base's own output layers, warm-started)",
    'l2_sp': "L2 pull of the trained weights toward the base model's (0: none)",
    'dropout': "rate of the networks' dropout layers while fine-tuning",
    'patience': 'early stopping: epochs without a better validation loss',
}


def main_voice(args) -> int:
    """Fine-tune on prepared voice datasets; compare with the base on the test sessions."""
    from mika_evaluation.node_config import ConfigError
    from mika_personal.report import compare, score_lines
    from mika_personal.voice_data import voice_node_values
    from mika_voice.voice_model import VoiceModelError, load_voice_model, save_voice_model

    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    try:
        parts = [VoiceDataset.load(path) for path in args.dataset]
        dataset = parts[0] if len(parts) == 1 else VoiceDataset.concatenate(
            parts, {'joined': [str(p) for p in args.dataset]})
        split = split_by_session(dataset, args.test_sessions, args.validation_sessions)
        base = VoiceTuningConfig.from_args(args)
        configs = [base.with_changes(v) for v in args.variant] or [base]
        values = voice_node_values(args.params)
        if not str(args.output).endswith('.keras'):
            raise ValueError(f'--output {args.output}: a voice model file must end in .keras')
    except (LeakageError, ValueError, ConfigError) as error:
        print(f'fine_tune: {error}', file=sys.stderr)
        return 2
    for name, sessions in split.sessions().items():
        print(f'{name} sessions: {", ".join(sessions) or "none"}')
    if split.validation is None:
        print('no validation session: every stage runs its full epochs (no early stopping), '
              "the base model's temperature is kept")
    provenance = {'dataset': [str(p) for p in args.dataset], 'dataset_info': dataset.info,
                  'command': ' '.join(['fine_tune'] + sys.argv[1:])}
    model_id = Path(args.output).stem + time.strftime('-%Y%m%d')
    try:
        generic = load_voice_model(args.base_model)
        personal = tune(generic, split, configs, values, model_id, provenance)
        path = save_voice_model(personal.model, args.output, personal.metadata)
    except (VoiceModelError, ValueError) as error:
        print(f'fine_tune: {error}', file=sys.stderr)
        return 2
    print(f'saved {path} ({path.stat().st_size / 1e6:.1f} MB); deploy with the voice node '
          f'parameter model_path:={path.resolve()}')
    if split.test is None:
        print('no test sessions: nothing to compare (the model was trained on all sessions)')
        return 0
    personal = load_voice_model(path)  # compare what the node will load
    test = split.test
    report = compare(
        test.labels, probabilities(generic, test, values), probabilities(personal, test, values),
        EMOTION_LABELS, args.report_dir, f'Voice, {", ".join(sorted(set(test.persons)))}: '
        f'generic vs personal on sessions {", ".join(split.sessions()["test"])}',
        name='voice', groups=test.session_ids,
        info={'generic': str(args.base_model), 'personal': str(path),
              'normalisation': "node's running normaliser, each test session from its start",
              'sessions': split.sessions()})
    print('\n'.join(score_lines(report, 'test utterances')))
    if args.report_dir:
        print(f'report in {args.report_dir / "voice.md"}')
    return 0
