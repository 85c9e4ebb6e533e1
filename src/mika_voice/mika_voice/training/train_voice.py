"""Train and evaluate the voice emotion model, every split by speaker.

ROS-free; importable and a CLI::

    python -m mika_voice.training.train_voice --output-dir /tmp/voice_eval \
        --model-out src/mika_voice/models/voice_emotion.keras

Reports (JSON + confusion-matrix PNGs in --output-dir), all on speakers the model never saw:
leave-speakers-out cross-validation over RAVDESS actors (5 folds of 4 actors) and EmoDB
(5 folds of 2 speakers); trained on all RAVDESS, tested on EmoDB, and the reverse, on the
classes both share. Augmented copies are used for training rows only. Test features are
standardised per speaker two ways: with all of that speaker's clips ("offline") and with
the node's running per-stream standardiser fed the clips one by one in random order
("stream", what the node does, with its default prior weight and half-life).

Features are computed on what the node classifies (``--segmentation node``, the default):
each clip, between 0.6 s gaps over the evaluation bags' -60 dBFS noise floor, goes through
the node's own segmenter and the utterance it cuts is used, not the file with its
leading and trailing silence (``--segmentation whole``). ``--test-segmentation`` tests
the RAVDESS cross-validation on features computed the other way (train/serve mismatch).

``--exclude-speakers 15 16 17 18 19 20`` (or ``--train-speakers``) keeps RAVDESS actors out of
everything (cross-validation, cross-corpus, the final model), so that they stay unseen for a
later test (an evaluation bag); the speakers used and held out are recorded in the metrics and
in the model's metadata.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_common.workspace import shared_data_dir
from mika_voice import features as feature_module
from mika_voice import voice_model as vm
from mika_voice.training.corpus import (DEFAULT_AUGMENT_ROUNDS, SEGMENTATION_NODE,
                                        SEGMENTATIONS, CorpusFeatures, corpus_features,
                                        describe_segment_counts, node_voice_values,
                                        segmenter_settings)

MODEL_KINDS = ('attention', 'mlp', 'logreg')
SHIPPABLE_KINDS = ('attention', 'mlp')
LABEL_INDEX = {name: i for i, name in enumerate(EMOTION_LABELS)}


@dataclass
class TrainConfig:
    kind: str = 'attention'
    epochs: int = 30
    batch_size: int = 64
    hidden: int = 512
    dropout: float = 0.5
    learning_rate: float = 1e-3
    label_smoothing: float = 0.1
    use_augmented: bool = True
    per_speaker: bool = True
    ensemble: int = 3
    seed: int = 0


def build_keras_model(kind: str, dims: int, hidden: int, dropout: float, seed: int,
                      name: str = ''):
    """Dense network, optionally with a feature-gating attention layer; outputs logits.

    The attention is a learned sigmoid gate over the hidden units computed from them
    (built-in Dense and Multiply layers only, so safe_mode loading works).
    """
    import keras
    from keras import layers
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(dims,), name='standardised_features')
    x = layers.GaussianNoise(0.1)(inputs)
    x = layers.Dense(hidden, activation='relu')(x)
    x = layers.Dropout(dropout)(x)
    if kind == 'attention':
        attention = layers.Dense(hidden, activation='sigmoid', name='attention_gate')(x)
        x = layers.Multiply(name='attended')([x, attention])
    x = layers.Dense(hidden // 2, activation='relu')(x)
    x = layers.Dropout(dropout)(x)
    logits = layers.Dense(len(EMOTION_LABELS), name='logits')(x)
    return keras.Model(inputs, logits, name=name or f'mika_voice_{kind}')


def average_models(members):
    """One Keras model whose logits are the mean of its members' (an ensemble in a file)."""
    if len(members) == 1:
        return members[0]
    import keras
    inputs = keras.Input(shape=members[0].input_shape[1:], name='standardised_features')
    logits = keras.layers.Average(name='ensemble_logits')([m(inputs) for m in members])
    return keras.Model(inputs, logits, name=f'{members[0].name.rsplit("_", 1)[0]}_ensemble')


class Trained:
    """A fitted model of any kind with a common ``logits`` method."""

    def __init__(self, kind, model):
        self.kind, self.model = kind, model

    def logits(self, x: np.ndarray) -> np.ndarray:
        if self.kind == 'logreg':
            full = np.full((len(x), len(EMOTION_LABELS)), -30.0)
            full[:, self.model.classes_] = self.model.decision_function(x)
            return full
        return np.asarray(self.model.predict(x, batch_size=512, verbose=0), dtype=np.float64)


def class_weights(y: np.ndarray) -> Dict[int, float]:
    counts = np.bincount(y, minlength=len(EMOTION_LABELS))
    present = counts > 0
    weights = np.zeros(len(EMOTION_LABELS))
    weights[present] = len(y) / (present.sum() * counts[present])
    return {i: float(w) for i, w in enumerate(weights)}


def fit(x: np.ndarray, y: np.ndarray, config: TrainConfig) -> Trained:
    if config.kind == 'logreg':
        from sklearn.linear_model import LogisticRegression
        model = LogisticRegression(C=0.05, max_iter=2000, class_weight='balanced')
        return Trained('logreg', model.fit(x, y))
    import keras
    targets = np.eye(len(EMOTION_LABELS), dtype=np.float32)[y]
    members = []
    for member in range(config.ensemble):
        model = build_keras_model(config.kind, x.shape[1], config.hidden, config.dropout,
                                  config.seed + member, name=f'{config.kind}_{member}')
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                      label_smoothing=config.label_smoothing))
        model.fit(x, targets, epochs=config.epochs, batch_size=config.batch_size,
                  class_weight=class_weights(y), shuffle=True, verbose=0)
        # An uncompiled copy: the saved file then holds no optimizer state (a third the size).
        inference = build_keras_model(config.kind, x.shape[1], config.hidden, config.dropout,
                                      config.seed + member, name=f'{config.kind}_{member}')
        inference.set_weights(model.get_weights())
        members.append(inference)
    return Trained(config.kind, average_models(members))


def encode(labels: Sequence[str]) -> np.ndarray:
    return np.array([LABEL_INDEX[label] for label in labels], dtype=np.int64)


def training_rows(data: CorpusFeatures, rows: np.ndarray, config: TrainConfig):
    """Standardised training matrix: originals by speaker, each augmentation round as a
    virtual speaker (augmented copies only ever come from training speakers)."""
    raw = [data.features[rows]]
    groups = [data.speakers[rows]]
    labels = [data.labels[rows]]
    if config.use_augmented:
        for round_index in range(data.augmented.shape[0]):
            raw.append(data.augmented[round_index, rows])
            groups.append(np.char.add(data.speakers[rows], f'#aug{round_index}'))
            labels.append(data.labels[rows])
    x, groups, y = np.concatenate(raw), np.concatenate(groups), encode(np.concatenate(labels))
    if config.per_speaker:
        return vm.SpeakerStandardiser.transform(x, groups), y
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), vm.MIN_STD)
    return ((x - mean) / std).astype(np.float32), y


def test_rows_offline(raw: np.ndarray, speakers: np.ndarray, train_raw: np.ndarray,
                      config: TrainConfig) -> np.ndarray:
    if config.per_speaker:
        return vm.SpeakerStandardiser.transform(raw, speakers)
    mean, std = train_raw.mean(axis=0), np.maximum(train_raw.std(axis=0), vm.MIN_STD)
    return ((raw - mean) / std).astype(np.float32)


def stream_order(speakers: np.ndarray, seed: int) -> List[np.ndarray]:
    """Each speaker's row indices in the random order they reach the stream normaliser."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.flatnonzero(speakers == s)) for s in np.unique(speakers)]


def test_rows_stream(raw: np.ndarray, order: List[np.ndarray], prior_mean,
                     prior_std) -> np.ndarray:
    """What the node computes: each speaker's clips, in ``order`` (:func:`stream_order`),
    through a fresh :class:`RunningStandardiser` with the node's default prior weight and
    half-life, each clip standardised right after its update."""
    values = node_voice_values()
    result = np.empty(raw.shape, dtype=np.float32)
    for indices in order:
        normaliser = vm.RunningStandardiser(prior_mean, prior_std,
                                            values['normaliser_prior_weight'],
                                            values['normaliser_half_life'])
        for index in indices:
            normaliser.update(raw[index])
            result[index] = normaliser.transform(raw[index])
    return result


#: Stream accuracy by how many utterances of the speaker the normaliser had seen.
STREAM_POSITION_BINS = ((1, 5), (6, 20), (21, None))


def stream_accuracy_by_position(correct: np.ndarray, positions: np.ndarray) -> Dict[str, float]:
    """Accuracy of the 1st-5th, 6th-20th and later utterances of each speaker's stream
    (``positions`` 1-based): how long a new voice takes to be judged as well as a known one."""
    result = {}
    for first, last in STREAM_POSITION_BINS:
        chosen = (positions >= first) & (positions <= (last or positions.max()))
        label = f'{first}-{last}' if last else f'{first}+'
        result[label] = float(np.mean(correct[chosen])) if chosen.any() else float('nan')
    return result


def metrics(y_true: np.ndarray, logits: np.ndarray, classes: Sequence[int]) -> Dict:
    """Accuracy, macro-F1, per-class recall and confusion over ``classes`` only (the
    argmax is restricted to them: a corpus without surprise is not asked about it)."""
    classes = list(classes)
    keep = np.isin(y_true, classes)
    y_true = y_true[keep]
    predicted = np.array(classes)[np.argmax(logits[keep][:, classes], axis=1)]
    names = [EMOTION_LABELS[c] for c in classes]
    confusion = np.array([[int(np.sum((y_true == t) & (predicted == p))) for p in classes]
                          for t in classes])
    recall = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    precision = confusion.diagonal() / np.maximum(confusion.sum(axis=0), 1)
    f1 = np.where(precision + recall > 0,
                  2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    shares = confusion.sum(axis=0) / max(len(y_true), 1)
    return {
        'clips': int(len(y_true)),
        'accuracy': float(np.mean(predicted == y_true)),
        'macro_f1': float(f1.mean()),
        'per_class_recall': {n: float(r) for n, r in zip(names, recall)},
        'min_recall': float(recall.min()),
        'largest_prediction_share': {'label': names[int(shares.argmax())],
                                     'share': float(shares.max())},
        'labels': names,
        'confusion': confusion.tolist(),
    }


def save_confusion_png(result: Dict, title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    confusion = np.array(result['confusion'], dtype=float)
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
    names = result['labels']
    ax.set_xticks(range(len(names)), names, rotation=45, ha='right')
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, int(confusion[i, j]), ha='center', va='center',
                    color='white' if rates[i, j] > 0.5 else 'black', fontsize=8)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title(f"{title}\nacc {result['accuracy']:.3f}  macro-F1 {result['macro_f1']:.3f}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def speaker_folds(speakers: np.ndarray, folds: int) -> List[np.ndarray]:
    """Consecutive groups of sorted speaker ids (RAVDESS: 4 actors, 2 male + 2 female)."""
    unique = np.array(sorted(np.unique(speakers)))
    return [group for group in np.array_split(unique, folds)]


def cross_validate(data: CorpusFeatures, config: TrainConfig, folds: int,
                   log=print, test_data: Optional[CorpusFeatures] = None) -> Dict:
    """Leave-speakers-out CV; returns out-of-fold logits (offline and stream) and metrics.

    ``test_data``: the same clips' features computed another way (e.g. whole clips vs the
    node's utterances), used for the held-out rows only, to measure a train/serve mismatch.
    """
    test_data = data if test_data is None else test_data
    if not np.array_equal(test_data.paths, data.paths):
        raise ValueError('test_data must hold the same clips, in the same order, as data')
    y = encode(data.labels)
    offline = np.zeros((len(y), len(EMOTION_LABELS)))
    stream = np.zeros_like(offline)
    positions = np.zeros(len(y), dtype=np.int64)
    fold_accuracy = []
    for fold, held_out in enumerate(speaker_folds(data.speakers, folds)):
        test = np.isin(data.speakers, held_out)
        train = ~test
        x_train, y_train = training_rows(data, np.flatnonzero(train), config)
        start = time.perf_counter()
        trained = fit(x_train, y_train, config)
        x_off = test_rows_offline(test_data.features[test], data.speakers[test],
                                  data.features[train], config)
        offline[test] = trained.logits(x_off)
        if config.per_speaker:
            mean, std = vm.population_statistics(data.features[train], data.speakers[train])
            order = stream_order(data.speakers[test], config.seed + fold)
            stream[test] = trained.logits(
                test_rows_stream(test_data.features[test], order, mean, std))
            test_rows = np.flatnonzero(test)
            for indices in order:
                positions[test_rows[indices]] = np.arange(1, len(indices) + 1)
        else:
            stream[test] = offline[test]
        fold_accuracy.append(float(np.mean(offline[test].argmax(1) == y[test])))
        log(f'  {data.name} fold {fold + 1}/{folds} speakers {[str(s) for s in held_out]}: '
            f'offline acc {fold_accuracy[-1]:.3f} ({time.perf_counter() - start:.0f} s)')
    classes = sorted(set(y.tolist()))
    stream_metrics = metrics(y, stream, classes)
    if config.per_speaker:
        stream_metrics['accuracy_by_stream_position'] = stream_accuracy_by_position(
            stream.argmax(1) == y, positions)
    return {'y': y, 'offline_logits': offline, 'stream_logits': stream,
            'offline': metrics(y, offline, classes), 'stream': stream_metrics,
            'fold_accuracy': fold_accuracy,
            'folds': [list(map(str, g)) for g in speaker_folds(data.speakers, folds)]}


def _speaker_matches(speaker: str, given: str) -> bool:
    """``given`` names ``speaker`` in full (``ravdess_17``) or by its number (``17``)."""
    return speaker == given or speaker.rsplit('_', 1)[-1] == given


def select_speakers(data: CorpusFeatures, train_speakers: Optional[Sequence[str]] = None,
                    exclude_speakers: Optional[Sequence[str]] = None) -> CorpusFeatures:
    """The clips (and their augmented copies) of the chosen speakers only: those named in
    ``train_speakers`` (all when None) minus those in ``exclude_speakers``. A name that
    matches no speaker raises ``ValueError`` (a typo must not silently train on everyone)."""
    present = sorted(set(data.speakers.tolist()))
    for given in list(train_speakers or []) + list(exclude_speakers or []):
        if not any(_speaker_matches(s, given) for s in present):
            raise ValueError(f'speaker {given!r} is not in corpus {data.name} '
                             f'(speakers: {", ".join(present)})')

    def named(speaker, names):
        return any(_speaker_matches(speaker, given) for given in names)
    chosen = [s for s in present
              if (train_speakers is None or named(s, train_speakers))
              and not named(s, exclude_speakers or [])]
    if len(chosen) < 2:
        raise ValueError(f'{len(chosen)} training speaker(s) left in {data.name}: '
                         'need at least 2 (speaker-disjoint folds)')
    keep = np.isin(data.speakers, chosen)
    return CorpusFeatures(data.name, data.features[keep], data.augmented[:, keep],
                          data.labels[keep], data.speakers[keep], data.paths[keep],
                          data.feature_names, data.feature_version, data.segmentation,
                          None if data.segment_counts is None else data.segment_counts[keep])


def describe_speakers(speakers: Sequence[str]) -> str:
    """``ravdess_01 .. ravdess_14`` -> ``01-14``; runs of consecutive numbers as ranges."""
    names = sorted({s.rsplit('_', 1)[-1] for s in speakers})
    if not all(n.isdigit() for n in names):
        return ','.join(names)
    numbers = sorted(names, key=int)
    runs: List[List[str]] = []
    for name in numbers:
        if runs and int(name) == int(runs[-1][-1]) + 1:
            runs[-1].append(name)
        else:
            runs.append([name])
    return ','.join(r[0] if len(r) == 1 else f'{r[0]}-{r[-1]}' for r in runs)


def fit_on_corpus(data: CorpusFeatures, config: TrainConfig) -> Trained:
    x, y = training_rows(data, np.arange(len(data.labels)), config)
    return fit(x, y, config)


def cross_corpus(train: CorpusFeatures, test: CorpusFeatures, config: TrainConfig) -> Dict:
    """Train on all of one corpus, test on the other's classes that both share."""
    trained = fit_on_corpus(train, config)
    y_test = encode(test.labels)
    shared = sorted(set(encode(train.labels).tolist()) & set(y_test.tolist()))
    x_off = test_rows_offline(test.features, test.speakers, train.features, config)
    mean, std = vm.population_statistics(train.features, train.speakers)
    x_stream = test_rows_stream(test.features, stream_order(test.speakers, config.seed),
                                mean, std)
    return {'offline': metrics(y_test, trained.logits(x_off), shared),
            'stream': metrics(y_test, trained.logits(x_stream), shared)}


def summary_line(name: str, result: Dict) -> str:
    recall = ' '.join(f'{k[:3]} {v:.2f}' for k, v in result['per_class_recall'].items())
    share = result['largest_prediction_share']
    by_position = ' '.join(f'{k} {v:.3f}' for k, v in
                           result.get('accuracy_by_stream_position', {}).items())
    return (f"{name}: acc {result['accuracy']:.3f} macro-F1 {result['macro_f1']:.3f} "
            f"min recall {result['min_recall']:.2f} | {recall} | largest share "
            f"{share['label']} {share['share']:.2f}"
            + (f' | by utterance of the speaker: {by_position}' if by_position else ''))


def run(args) -> Dict:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir)
    log_lines: List[str] = []

    def log(message: str) -> None:
        print(message, flush=True)
        log_lines.append(message)

    started = time.perf_counter()
    ravdess_all = corpus_features(data_dir / 'ravdess', args.cache_dir, args.augment_rounds,
                                  args.feature_set, log=log, segmentation=args.segmentation,
                                  jobs=args.jobs)
    ravdess = select_speakers(ravdess_all, args.train_speakers, args.exclude_speakers)
    log(describe_segment_counts(ravdess))
    ravdess_test = None
    test_segmentation = args.test_segmentation or args.segmentation
    if test_segmentation != args.segmentation:
        ravdess_test = select_speakers(
            corpus_features(data_dir / 'ravdess', args.cache_dir, args.augment_rounds,
                            args.feature_set, log=log, segmentation=test_segmentation,
                            jobs=args.jobs),
            args.train_speakers, args.exclude_speakers)
        log(f'RAVDESS CV tested on {test_segmentation} features: '
            f'{describe_segment_counts(ravdess_test)}')
    speakers = sorted(set(ravdess.speakers.tolist()))
    held_out = sorted(set(ravdess_all.speakers.tolist()) - set(speakers))
    actors = describe_speakers(speakers)
    if held_out:
        log(f'RAVDESS actors {actors} only; held out of all training: '
            f'{describe_speakers(held_out)}')
    emodb = None if args.skip_emodb else corpus_features(
        data_dir / 'emodb', args.cache_dir, args.augment_rounds, args.feature_set, log=log,
        segmentation=args.segmentation, jobs=args.jobs)
    log(f'features ready: ravdess {ravdess.features.shape}, emodb '
        f'{"skipped" if emodb is None else emodb.features.shape} '
        f'({time.perf_counter() - started:.0f} s)')
    base = TrainConfig(kind=args.model_kind, epochs=args.epochs, ensemble=args.ensemble,
                       seed=args.seed)
    report: Dict = {'feature_version': ravdess.feature_version,
                    'feature_set': args.feature_set, 'feature_dims': len(ravdess.feature_names),
                    'segmentation': args.segmentation, 'test_segmentation': test_segmentation,
                    'node_segmenter': segmenter_settings(),
                    'segment_counts': describe_segment_counts(ravdess),
                    'augment_rounds': args.augment_rounds, 'config': vars(base),
                    'ravdess_speakers': speakers, 'ravdess_held_out_speakers': held_out,
                    'command': ' '.join(sys.argv), 'results': {}}
    results = report['results']

    compare = [base.kind] + [k for k in args.compare if k != base.kind]
    cv_main = None
    for kind in compare:
        config = TrainConfig(**{**vars(base), 'kind': kind})
        log(f'RAVDESS actors {actors}: 5-fold leave-speakers-out CV, model {kind}')
        cv = cross_validate(ravdess, config, 5, log, ravdess_test)
        if kind == base.kind:
            cv_main = cv
        for mode in ('offline', 'stream'):
            key = f'ravdess_cv/{kind}/{mode}'
            results[key] = {**cv[mode], 'fold_accuracy': cv['fold_accuracy']} \
                if mode == 'offline' else cv[mode]
            log(summary_line(key, cv[mode]))
    for name, overrides in (('no_speaker_norm', {'per_speaker': False}),
                            ('no_augmentation', {'use_augmented': False})):
        if name not in args.ablations:
            continue
        # On the fast linear model, compared with its own full-recipe row (ravdess_cv/logreg).
        config = TrainConfig(**{**vars(base), **overrides, 'kind': 'logreg'})
        log(f'ablation {name} (logreg)')
        cv = cross_validate(ravdess, config, 5, log, ravdess_test)
        results[f'ravdess_cv/logreg/{name}'] = cv['offline']
        log(summary_line(f'ravdess_cv/logreg/{name}', cv['offline']))

    if emodb is not None:
        log('EmoDB 5-fold leave-2-speakers-out CV')
        cv = cross_validate(emodb, base, 5, log)
        for mode in ('offline', 'stream'):
            results[f'emodb_cv/{base.kind}/{mode}'] = cv[mode]
            log(summary_line(f'emodb_cv/{mode}', cv[mode]))
    for train_set, test_set in ((ravdess, emodb), (emodb, ravdess)) if emodb is not None else ():
        name = f'train_{train_set.name}_test_{test_set.name}'
        log(name)
        result = cross_corpus(train_set, test_set, base)
        for mode in ('offline', 'stream'):
            results[f'{name}/{base.kind}/{mode}'] = result[mode]
            log(summary_line(f'{name}/{mode}', result[mode]))

    for key, result in results.items():
        save_confusion_png(result, key, out / ('confusion_' + key.replace('/', '_') + '.png'))

    if args.model_out:
        temperature = vm.fit_temperature(cv_main['stream_logits'], cv_main['y'])
        log(f'temperature fitted on out-of-fold (unseen-speaker) stream logits: {temperature:.3f}')
        report['temperature'] = temperature
        report['calibration'] = calibration_report(cv_main, temperature)
        train_start = time.perf_counter()
        trained = fit_on_corpus(ravdess, base)
        report['final_training_s'] = time.perf_counter() - train_start
        mean, std = vm.population_statistics(ravdess.features, ravdess.speakers)
        cv_stream = results[f'ravdess_cv/{base.kind}/stream']
        cv_offline = results[f'ravdess_cv/{base.kind}/offline']
        metadata = vm.VoiceModelMetadata(
            feature_version=ravdess.feature_version, feature_set=args.feature_set,
            feature_names=list(ravdess.feature_names), sample_rate=feature_module.SAMPLE_RATE,
            label_names=list(EMOTION_LABELS), population_mean=mean.tolist(),
            within_speaker_std=std.tolist(), temperature=temperature,
            model_id=(f'mika-voice-{base.kind}-ravdess{len(speakers)}'
                      f'{"-" + actors if held_out else ""}-{args.segmentation}-segments'
                      f'-{ravdess.feature_version}'),
            training={'data': f'RAVDESS speech actors {actors} (CC BY-NC-SA 4.0), 7 classes, '
                              f'{len(ravdess.labels)} clips + {args.augment_rounds} '
                              'augmented copies each',
                      'segmentation': args.segmentation,
                      'node_segmenter': report['node_segmenter'],
                      'speakers': speakers, 'held_out_speakers': held_out,
                      'command': report['command'], 'config': vars(base),
                      'ravdess_cv_offline_accuracy': cv_offline['accuracy'],
                      'ravdess_cv_stream_accuracy': cv_stream['accuracy']})
        path = vm.save_voice_model(trained.model, args.model_out, metadata)
        log(f'model written to {path} ({path.stat().st_size / 1024:.0f} KiB)')
        report['model'] = str(path)
    report['total_s'] = time.perf_counter() - started
    (out / 'metrics.json').write_text(json.dumps(report, indent=1))
    (out / 'log.txt').write_text('\n'.join(log_lines) + '\n')
    log(f'metrics in {out / "metrics.json"} ({report["total_s"]:.0f} s)')
    return report


def calibration_report(cv: Dict, temperature: float) -> Dict:
    """Negative log-likelihood and expected calibration error before/after scaling."""
    y = cv['y']
    result = {}
    for name, t in (('uncalibrated', 1.0), ('calibrated', temperature)):
        p = vm.softmax(cv['stream_logits'], t)
        confidence, correct = p.max(1), p.argmax(1) == y
        bins = np.minimum((confidence * 10).astype(int), 9)
        ece = sum(abs(confidence[bins == b].mean() - correct[bins == b].mean()) *
                  np.mean(bins == b) for b in range(10) if np.any(bins == b))
        result[name] = {'nll': float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12))),
                        'ece': float(ece), 'mean_confidence': float(confidence.mean())}
    return result


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data-dir', default=str(shared_data_dir()),
                        help='folder holding ravdess/ and emodb/ (default $MIKA_DATA or '
                             '<repo>/../shared/data)')
    parser.add_argument('--output-dir', required=True, help='metrics JSON and PNGs go here')
    parser.add_argument('--model-out', default=None,
                        help='write the model trained on all chosen RAVDESS actors here (.keras)')
    parser.add_argument('--cache-dir', default=None,
                        help='feature cache (default $MIKA_CACHE or <repo>/.cache/mika_voice)')
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument('--train-speakers', nargs='+', default=None, metavar='ID',
                        help='RAVDESS actors to use (ravdess_03 or 03); default all')
    chosen.add_argument('--exclude-speakers', nargs='+', default=None, metavar='ID',
                        help='RAVDESS actors kept out of all training and evaluation here, '
                             'e.g. 15 16 17 18 19 20 for an evaluation bag on them')
    parser.add_argument('--model-kind', choices=MODEL_KINDS, default='attention')
    parser.add_argument('--compare', nargs='*', choices=MODEL_KINDS, default=['mlp', 'logreg'],
                        help='other model kinds to cross-validate on RAVDESS for comparison')
    parser.add_argument('--ablations', nargs='*', default=['no_speaker_norm', 'no_augmentation'],
                        choices=['no_speaker_norm', 'no_augmentation'])
    parser.add_argument('--epochs', type=int, default=TrainConfig.epochs)
    parser.add_argument('--ensemble', type=int, default=TrainConfig.ensemble,
                        help='networks (different seeds) averaged into the one model file')
    parser.add_argument('--augment-rounds', type=int, default=DEFAULT_AUGMENT_ROUNDS,
                        help='augmented copies of each training clip')
    parser.add_argument('--feature-set', choices=feature_module.FEATURE_SETS,
                        default=feature_module.FEATURE_SET_LIBROSA,
                        help="'librosa+egemaps' adds openSMILE's eGeMAPS (pip install "
                             "opensmile): no gain on RAVDESS and 84 ms more per 3 s "
                             "utterance, see the model card")
    parser.add_argument('--segmentation', choices=SEGMENTATIONS, default=SEGMENTATION_NODE,
                        help="features of the utterance the node's segmenter cuts from each "
                             "clip ('node', what the node classifies) or of the whole clip")
    parser.add_argument('--test-segmentation', choices=SEGMENTATIONS, default=None,
                        help='RAVDESS cross-validation: test rows computed this way instead '
                             '(default: as --segmentation), to measure a train/serve mismatch')
    parser.add_argument('--skip-emodb', action='store_true',
                        help='no EmoDB cross-validation and no cross-corpus tests')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--jobs', type=int, default=os.cpu_count() or 1,
                        help='processes computing features (default: one per CPU core)')
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f'--jobs must be at least 1, got {args.jobs}')
    if args.model_out and args.model_kind not in SHIPPABLE_KINDS:
        parser.error(f'--model-out needs a Keras model kind {SHIPPABLE_KINDS}; '
                     f'{args.model_kind!r} is for comparison only')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == '__main__':
    sys.exit(main())
