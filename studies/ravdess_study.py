"""Personal voice fine-tuning shown on real speech: RAVDESS actors as "the person".

    nice -n 10 python studies/ravdess_study.py    # -> studies/results/ravdess_personal_voice.*

Each actor's 52 labelled clips become two sessions, one per RAVDESS repetition (the same
26 sentence/emotion/intensity combinations spoken a second time; never the same clip on
both sides): clips in random order with a second of silence between them, written with
:func:`mika_personal.session_writer.write_session` and prepared with
:func:`mika_personal.voice_data.prepare_voices` (the node's VAD and features), as a user's
recordings would be. For each actor the model is fine-tuned on one repetition and tested
on the other, then the other way round, so every clip is tested once by a model that never
heard it.

The shipped model was trained on actors 01-20, so it has heard every actor here: a gain
over it would measure nothing. The generic model of each group is therefore trained with
the shipped recipe (:func:`mika_voice.training.train_voice.fit_on_corpus`) on the other 16
actors only. Fine-tuning settings are chosen on development actors (01-04, generic model
trained on 05-20) among a few candidates, and only the chosen one is run on the test
actors (17-20, generic model trained on 01-16), so nothing is tuned on the actors reported.

Scores, per actor: the node's way (each test session replayed through the running
normaliser from its start, each model with its own prior: population statistics for the
generic model, the person's training statistics for the personal one) and fully adapted
("person": every model sees the test session standardised with all its utterances).
Generic models, prepared sessions and datasets are cached in ``--work-dir``.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_common.workspace import repository_root, shared_data_dir
from mika_personal import report as report_module
from mika_personal.session_writer import write_clip_session
from mika_personal.voice_data import DEFAULT_AUGMENT_ROUNDS, VoiceDataset

DEV_ACTORS = ('01', '02', '03', '04')
TEST_ACTORS = ('17', '18', '19', '20')
#: Fine-tuning settings compared on the development actors, from cautious to bold (each
#: complete, so that the study does not change when the tool's defaults do).
CANDIDATES = {
    'head only, strong pull': 'unfreeze_stages=0,l2_sp=0.01,learning_rate=0.001',
    'head, then two layers, weak pull': 'unfreeze_stages=2,unfreeze_lr_factor=0.1,'
                                        'l2_sp=0.001,learning_rate=0.003',
    'head, then all three layers, no pull': 'unfreeze_stages=3,unfreeze_lr_factor=0.3,'
                                            'l2_sp=0,learning_rate=0.003',
}
MODES = ('node', 'person')
GAP_S = 1.0
LEAD_S = 0.5
RESULT_NAME = 'ravdess_personal_voice'


# ----------------------------------------------------------------------------- sessions
def actor_clips(ravdess_dir: Path, actor: str) -> Dict[str, List[Tuple[Path, str]]]:
    """{repetition: [(clip path, label)]} of one actor's labelled clips."""
    table = Path(ravdess_dir) / 'labels.csv'
    by_repetition: Dict[str, List[Tuple[Path, str]]] = {}
    with table.open(newline='') as handle:
        for row in csv.DictReader(handle):
            if row['label'] and row['speaker_or_subject'] == f'ravdess_{actor}':
                by_repetition.setdefault(row['repetition'], []).append(
                    (Path(ravdess_dir) / row['path'], row['label']))
    if not by_repetition:
        raise ValueError(f'{table}: no labelled clips of actor {actor}')
    return by_repetition


def actor_sessions(ravdess_dir: Path, actor: str, root: Path, seed: int) -> List[Path]:
    """The actor's two sessions (one per repetition, clips shuffled), written once."""
    from mika_voice.training.corpus import load_audio
    sessions = []
    for repetition, clips in sorted(actor_clips(ravdess_dir, actor).items()):
        session_id = f'ravdess{actor}-rep{int(repetition)}'
        folder = Path(root) / session_id
        if not folder.is_dir():
            order = np.random.default_rng([seed, int(actor), int(repetition)]).permutation(
                len(clips))
            write_clip_session(root, session_id, f'ravdess_{actor}',
                               [(load_audio(clips[i][0]), clips[i][1]) for i in order],
                               gap_s=GAP_S, lead_s=LEAD_S,
                               notes='RAVDESS clips (CC BY-NC-SA 4.0) joined by ravdess_study')
        sessions.append(folder)
    return sessions


# ----------------------------------------------------------------------------- models
def generic_model(corpus, held_out: Sequence[str], path: Path, temperature: float, log):
    """The shipped recipe trained without ``held_out`` actors (cached at ``path``)."""
    from mika_voice import features, voice_model as vm
    from mika_voice.training import train_voice as tv

    if path.is_file():
        classifier = vm.load_voice_model(path)
        if classifier.metadata.training.get('held_out_speakers') == [
                f'ravdess_{a}' for a in held_out]:
            return classifier
    data = tv.select_speakers(corpus, exclude_speakers=list(held_out))
    speakers = sorted(set(data.speakers.tolist()))
    log(f'training the generic model without actors {", ".join(held_out)} '
        f'({len(data.labels)} clips x {1 + data.augmented.shape[0]}, shipped recipe)')
    started = time.perf_counter()
    config = tv.TrainConfig()
    trained = tv.fit_on_corpus(data, config)
    mean, std = vm.population_statistics(data.features, data.speakers)
    metadata = vm.VoiceModelMetadata(
        feature_version=data.feature_version, feature_set=features.FEATURE_SET_LIBROSA,
        feature_names=list(data.feature_names), sample_rate=features.SAMPLE_RATE,
        label_names=list(EMOTION_LABELS), population_mean=mean.tolist(),
        within_speaker_std=std.tolist(), temperature=temperature,
        model_id=f'mika-voice-attention-ravdess-without-{"-".join(held_out)}',
        training={'data': f'RAVDESS actors {tv.describe_speakers(speakers)}',
                  'speakers': speakers, 'held_out_speakers': [f'ravdess_{a}' for a in held_out],
                  'config': vars(config),
                  'temperature': "the shipped model's (not refitted)"})
    vm.save_voice_model(trained.model, path, metadata)
    log(f'  trained in {time.perf_counter() - started:.0f} s -> {path}')
    return vm.load_voice_model(path)


# ----------------------------------------------------------------------------- one group
def run_actor(generic, dataset: VoiceDataset, actor: str, config, values: Dict, log
              ) -> Dict:
    """Fine-tune on each repetition, test on the other; pooled predictions per mode."""
    from mika_personal.voice_tuning import probabilities, split_by_session, tune
    rows = np.flatnonzero(dataset.persons == f'ravdess_{actor}')
    mine = dataset.subset(rows)
    sessions = sorted(set(mine.session_ids.tolist()))
    if len(sessions) != 2:
        raise ValueError(f'actor {actor}: expected 2 sessions, found {sessions}')
    pooled: Dict = {'labels': [], 'sessions': [],
                    **{f'{model}_{mode}': [] for model in ('generic', 'personal')
                       for mode in MODES}}
    for test_session in sessions:
        split = split_by_session(mine, [test_session], validation_sessions=[])
        personal = tune(generic, split, [config], values, f'ravdess{actor}-personal',
                        {'study': 'ravdess_study'}, log=lambda message: None)
        for mode in MODES:
            pooled[f'generic_{mode}'].append(probabilities(generic, split.test, values, mode))
            pooled[f'personal_{mode}'].append(probabilities(personal, split.test, values,
                                                            mode))
        pooled['labels'].append(split.test.labels)
        pooled['sessions'].append(split.test.session_ids)
    return {key: np.concatenate(value) for key, value in pooled.items()}


def actor_scores(pooled: Dict) -> Dict:
    scores = {}
    for mode in MODES:
        result = report_module.comparison(pooled['labels'], pooled[f'generic_{mode}'],
                                          pooled[f'personal_{mode}'], EMOTION_LABELS)
        scores[mode] = {
            'utterances': result['samples'],
            **{f'{model}_{key}': result[model][key] for model in ('generic', 'personal')
               for key in ('accuracy', 'macro_f1')},
            'gain_accuracy': result['gain']['accuracy'],
            'gain_macro_f1': result['gain']['macro_f1'],
            'mcnemar_p': result['mcnemar_p']}
    return scores


def run_group(generic, dataset: VoiceDataset, actors: Sequence[str], config, values, log
              ) -> Tuple[Dict, Dict]:
    """(scores per actor, predictions pooled over the actors)."""
    per_actor, pooled = {}, {}
    for actor in actors:
        started = time.perf_counter()
        result = run_actor(generic, dataset, actor, config, values, log)
        per_actor[actor] = actor_scores(result)
        for key, value in result.items():
            pooled.setdefault(key, []).append(value)
        node = per_actor[actor]['node']
        log(f'  actor {actor}: node accuracy {node["generic_accuracy"]:.3f} -> '
            f'{node["personal_accuracy"]:.3f}, person-standardised '
            f'{per_actor[actor]["person"]["generic_accuracy"]:.3f} -> '
            f'{per_actor[actor]["person"]["personal_accuracy"]:.3f} '
            f'({time.perf_counter() - started:.0f} s)')
    return per_actor, {key: np.concatenate(value) for key, value in pooled.items()}


def mean_gains(per_actor: Dict) -> Dict:
    result = {}
    for mode in MODES:
        for key in ('accuracy', 'macro_f1'):
            gains = np.array([scores[mode][f'gain_{key}'] for scores in per_actor.values()])
            generic = np.array([scores[mode][f'generic_{key}'] for scores in per_actor.values()])
            personal = np.array([scores[mode][f'personal_{key}']
                                 for scores in per_actor.values()])
            result[f'{mode}_{key}'] = {
                'generic_mean': float(generic.mean()), 'personal_mean': float(personal.mean()),
                'gain_mean': float(gains.mean()), 'gain_std': float(gains.std(ddof=1))
                if len(gains) > 1 else 0.0,
                'actors_improved': int(np.sum(gains > 0)),
                'actors_worse': int(np.sum(gains < 0))}
    return result


# ----------------------------------------------------------------------------- report
def _f(value: float) -> str:
    return f'{value:.3f}'


def _g(value: float) -> str:
    return f'{value:+.3f}'


def markdown(result: Dict) -> str:
    test = result['test']
    lines = [
        '# Personal voice fine-tuning on RAVDESS actors (generic vs personal)', '',
        f'Made by `{result["command"].strip()}` in {result["total_s"] / 60:.1f} min '
        f'({result["machine"]}; generic models and prepared sessions '
        f'{"from the cache" if result["cached"] else "made in this run"}). See '
        '`studies/ravdess_study.py` for the protocol.', '',
        '- "The person": one RAVDESS actor; two sessions per actor, one per repetition (26 '
        'labelled clips each, shuffled, 1 s of silence between clips), cut into utterances '
        "with the voice node's VAD and described with its features (`prepare_voices`).",
        '- Fine-tuned on one repetition, tested on the other, then the other way round: every '
        'clip tested once, by a model that never heard that clip.',
        f'- Generic model: the shipped recipe trained **without** the actors tested '
        f'({result["groups"]["test"]["generic_model_id"]} for actors '
        f'{", ".join(result["groups"]["test"]["actors"])}); the shipped model heard every '
        'RAVDESS actor 01-20, so it cannot be the baseline here.',
        f'- Fine-tuning settings chosen on development actors '
        f'{", ".join(result["groups"]["dev"]["actors"])} (generic model trained without them) '
        f'by mean node accuracy gain: **{result["chosen"]}** '
        f'(`{result["chosen_config"]}`); only that one ran on the test actors.',
        '- node: each test session replayed through the voice node\'s running normaliser '
        '(prior weight {0}, half-life {1} utterances) from its start, each model with its own '
        'prior (generic: the training population; personal: the person\'s training '
        'session). person: the test session standardised with all of its utterances, the '
        'same rows for both models (the gain of the weights alone).'.format(
            result['normaliser']['prior_weight'], result['normaliser']['half_life']), '',
        f'## Test actors {", ".join(test["actors"])}', '',
        '| actor | utterances | node: generic acc | personal acc | gain | generic F1 | '
        'personal F1 | gain | person-std: generic acc | personal acc | gain |',
        '|---|---|---|---|---|---|---|---|---|---|---|']
    for actor, scores in test['per_actor'].items():
        n, p = scores['node'], scores['person']
        lines.append(
            f'| {actor} | {n["utterances"]} | {_f(n["generic_accuracy"])} | '
            f'{_f(n["personal_accuracy"])} | {_g(n["gain_accuracy"])} | '
            f'{_f(n["generic_macro_f1"])} | {_f(n["personal_macro_f1"])} | '
            f'{_g(n["gain_macro_f1"])} | {_f(p["generic_accuracy"])} | '
            f'{_f(p["personal_accuracy"])} | {_g(p["gain_accuracy"])} |')
    m = test['mean']
    lines.append(
        f'| **mean** | | {_f(m["node_accuracy"]["generic_mean"])} | '
        f'{_f(m["node_accuracy"]["personal_mean"])} | **{_g(m["node_accuracy"]["gain_mean"])}** | '
        f'{_f(m["node_macro_f1"]["generic_mean"])} | {_f(m["node_macro_f1"]["personal_mean"])} | '
        f'**{_g(m["node_macro_f1"]["gain_mean"])}** | '
        f'{_f(m["person_accuracy"]["generic_mean"])} | '
        f'{_f(m["person_accuracy"]["personal_mean"])} | '
        f'**{_g(m["person_accuracy"]["gain_mean"])}** |')
    lines += ['', 'Mean gain over the test actors (standard deviation across actors; actors '
              'better / worse):', '']
    for key, name in (('node_accuracy', 'node, accuracy'), ('node_macro_f1', 'node, macro-F1'),
                      ('person_accuracy', 'person-standardised, accuracy'),
                      ('person_macro_f1', 'person-standardised, macro-F1')):
        lines.append(f'- {name}: {_g(m[key]["gain_mean"])} (sd {m[key]["gain_std"]:.3f}; '
                     f'{m[key]["actors_improved"]} better, {m[key]["actors_worse"]} worse)')
    if 'shipped_node_accuracy' in test:
        lines += ['', f'For reference only, the shipped model (trained on these actors too) '
                  f'scores {_f(test["shipped_node_accuracy"])} node accuracy on the same '
                  'sessions: the inflated figure a contaminated baseline would give.']
    for mode in MODES:
        lines += ['', report_module.markdown(
            test['pooled'][mode], f'Pooled over the test actors ({mode})',
            f'{RESULT_NAME}_{mode}_confusion.png').replace('## ', '### ', 1)]
    lines += ['## Choosing the settings on the development actors', '',
              '| candidate | settings | node acc gain | node macro-F1 gain | person-std acc gain |',
              '|---|---|---|---|---|']
    for name, entry in result['groups']['dev']['candidates'].items():
        m = entry['mean']
        lines.append(f'| {name} | `{entry["config"] or "defaults"}` | '
                     f'{_g(m["node_accuracy"]["gain_mean"])} | '
                     f'{_g(m["node_macro_f1"]["gain_mean"])} | '
                     f'{_g(m["person_accuracy"]["gain_mean"])} |')
    lines += ['', 'Reading the figures: each actor contributes about 52 test utterances, so '
              'one utterance is 1.9 points of that actor\'s accuracy; the per-actor McNemar '
              'p-values are in the JSON. The two RAVDESS repetitions are two takes of the same '
              'two sentences in the same emotions and intensities by the same actor, so the '
              'personal model is tested on speech very close to what it trained on: the gain '
              'is an upper bound of what a person speaking freely to a robot would see. It '
              'shows that the tools work as intended (and that one repetition of 26 acted '
              'sentences is enough to move the model), not how much a real user gains.', '']
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- main
def run(args) -> Dict:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from mika_personal.voice_data import prepare_voices, voice_node_values
    from mika_personal.voice_tuning import VoiceTuningConfig, probabilities
    from mika_voice.training.corpus import corpus_features
    from mika_voice.voice_model import load_voice_model
    from mika_voice.voice_parameters import default_model_path

    started = time.perf_counter()
    work, out = Path(args.work_dir), Path(args.output_dir)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(message, flush=True)

    ravdess = Path(args.data_dir) / 'ravdess'
    values = voice_node_values(None)
    shipped = load_voice_model(default_model_path())
    corpus = corpus_features(ravdess, args.cache_dir, log=log)
    groups = {'dev': list(args.dev_actors), 'test': list(args.test_actors)}
    generic_paths = {name: work / f'generic-without-{"-".join(actors)}.keras'
                     for name, actors in groups.items()}
    dataset_path = work / f'voice-{"-".join(args.dev_actors + args.test_actors)}-' \
                          f'aug{args.augment_rounds}-seed{args.seed}.npz'
    cached = all(p.is_file() for p in generic_paths.values()) and dataset_path.is_file()
    generic = {name: generic_model(corpus, actors, generic_paths[name],
                                   shipped.metadata.temperature, log)
               for name, actors in groups.items()}
    if dataset_path.is_file():
        dataset = VoiceDataset.load(dataset_path)
    else:
        sessions = []
        for actor in groups['dev'] + groups['test']:
            sessions += actor_sessions(ravdess, actor, work / 'sessions', args.seed)
        log(f'preparing {len(sessions)} sessions with the voice node\'s segmenter and features')
        dataset = prepare_voices(sessions, str(generic['test'].path),
                                 augment_rounds=args.augment_rounds, seed=args.seed, log=log)
        dataset.save(dataset_path)
    base = VoiceTuningConfig(seed=args.seed)
    candidates = {name: spec for name, spec in CANDIDATES.items()
                  if not args.candidates or name in args.candidates}
    dev = {'actors': groups['dev'], 'generic_model_id': generic['dev'].metadata.model_id,
           'candidates': {}}
    for name, spec in candidates.items():
        log(f'development actors {", ".join(groups["dev"])}: {name}'
            + (f' ({spec})' if spec else ''))
        per_actor, _ = run_group(generic['dev'], dataset, groups['dev'], base.with_changes(spec),
                                 values, log)
        dev['candidates'][name] = {'config': spec, 'per_actor': per_actor,
                                   'mean': mean_gains(per_actor)}
    chosen = max(dev['candidates'], key=lambda n: (
        dev['candidates'][n]['mean']['node_accuracy']['gain_mean'],
        dev['candidates'][n]['mean']['node_macro_f1']['gain_mean']))
    log(f'chosen on the development actors: {chosen}')
    config = base.with_changes(candidates[chosen])
    log(f'test actors {", ".join(groups["test"])} with {chosen}')
    per_actor, pooled = run_group(generic['test'], dataset, groups['test'], config, values, log)
    test = {'actors': groups['test'], 'per_actor': per_actor, 'mean': mean_gains(per_actor),
            'pooled': {}}
    for mode in MODES:
        test['pooled'][mode] = report_module.comparison(
            pooled['labels'], pooled[f'generic_{mode}'], pooled[f'personal_{mode}'],
            EMOTION_LABELS, groups=pooled['sessions'])
        report_module.plot_confusions(
            test['pooled'][mode], f'RAVDESS actors {", ".join(groups["test"])}, {mode}: '
            'generic (trained without them) vs personal',
            out / f'{RESULT_NAME}_{mode}_confusion.png')
    test_rows = np.flatnonzero(np.isin(dataset.persons, [f'ravdess_{a}' for a in groups['test']]))
    shipped_probs = probabilities(shipped, dataset.subset(test_rows), values, 'node')
    test['shipped_node_accuracy'] = float(np.mean(
        shipped_probs.argmax(1) == report_module.label_indices(dataset.labels[test_rows],
                                                               EMOTION_LABELS)))
    result = {
        'command': 'python studies/ravdess_study.py ' + ' '.join(sys.argv[1:]),
        'machine': f'{os.cpu_count()} CPU cores, shared',
        'cached': cached,
        'normaliser': {'prior_weight': values['normaliser_prior_weight'],
                       'half_life': values['normaliser_half_life']},
        'dataset': {'file': str(dataset_path), 'info': dataset.info,
                    'utterances': int(len(dataset))},
        'groups': {'dev': dev, 'test': {'actors': groups['test'],
                                        'generic_model_id': generic['test'].metadata.model_id}},
        'chosen': chosen, 'chosen_config': candidates[chosen] or 'defaults',
        'config': dataclasses.asdict(config),
        'test': test, 'total_s': time.perf_counter() - started}
    report_module.write_json(result, out / f'{RESULT_NAME}.json')
    (out / f'{RESULT_NAME}.md').write_text(markdown(result))
    log(f'written {out / (RESULT_NAME + ".md")} ({result["total_s"] / 60:.1f} min)')
    return result


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data-dir', default=str(shared_data_dir()),
                        help='folder holding ravdess/ (default $MIKA_DATA or ../shared/data)')
    parser.add_argument('--output-dir', default=str(repository_root() / 'studies' / 'results'))
    parser.add_argument('--work-dir', default=str(repository_root() / '.cache' /
                                                  'mika_personal' / 'ravdess_study'),
                        help='generic models, sessions and datasets are cached here')
    parser.add_argument('--cache-dir', default=None,
                        help="mika_voice's corpus feature cache (default: its own)")
    parser.add_argument('--dev-actors', nargs='+', default=list(DEV_ACTORS))
    parser.add_argument('--test-actors', nargs='+', default=list(TEST_ACTORS))
    parser.add_argument('--candidates', nargs='*', default=None, choices=list(CANDIDATES),
                        help='candidate settings compared on the development actors '
                             '(default: all)')
    parser.add_argument('--augment-rounds', type=int, default=DEFAULT_AUGMENT_ROUNDS,
                        help='augmented copies of each utterance (as prepare_sessions)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    overlap = set(args.dev_actors) & set(args.test_actors)
    if overlap:
        parser.error(f'actors {sorted(overlap)} are both development and test actors')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == '__main__':
    sys.exit(main())
