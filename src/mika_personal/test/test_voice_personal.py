"""Personal fine-tuning, voice side: session -> prepare (the node's VAD and features) ->
split by session -> freeze/unfreeze fine-tuning -> a model file the voice node loads.

The sessions are made of real RAVDESS sentences (one actor); the models are the shipped
one and real fine-tunes of it trained here for a few epochs. Tests that need the shared
data skip without it.
"""
import csv
import os
import pathlib

import numpy as np
import pytest

from mika_common.emotions import EMOTION_LABELS
from mika_evaluation.bag_format import Interval, read_truth_csv
from mika_personal import fine_tune as fine_tune_cli
from mika_personal.session_writer import write_clip_session
from mika_personal.sessions import LeakageError
from mika_personal.voice_data import VoiceDataset, label_utterance, prepare_voices
from mika_personal.voice_tuning import (
    VoiceTuningConfig, networks, probabilities, split_by_session, tune)

REPO = pathlib.Path(__file__).resolve().parents[3]
BASE_MODEL = REPO / 'src' / 'mika_voice' / 'models' / 'voice_emotion.keras'
ACTOR = 'ravdess_05'
#: One clip of each of these per session (the sentence "kids", normal intensity).
LABELS = ('angry', 'happy', 'sad', 'neutral', 'fear')


def ravdess_dir() -> pathlib.Path:
    data = pathlib.Path(os.environ.get('MIKA_DATA', REPO.parent / 'shared' / 'data'))
    folder = data / 'ravdess'
    if not (folder / 'labels.csv').is_file():
        pytest.skip(f'RAVDESS not found at {folder} (set MIKA_DATA to the shared data folder)')
    return folder


@pytest.fixture(scope='module')
def sessions(tmp_path_factory):
    """Two sessions of one actor, one per RAVDESS repetition, 5 sentences each."""
    from mika_voice.training.corpus import load_audio
    folder = ravdess_dir()
    with open(folder / 'labels.csv', newline='') as handle:
        rows = [r for r in csv.DictReader(handle) if r['speaker_or_subject'] == ACTOR
                and r['statement'] == 'kids' and r['intensity'] == 'normal']
    root = tmp_path_factory.mktemp('sessions')
    made = {}
    for repetition in ('01', '02'):
        clips = [next(r for r in rows if r['label'] == label and r['repetition'] == repetition)
                 for label in LABELS]
        made[f'rep{repetition}'] = write_clip_session(
            root, f'rep{repetition}', ACTOR,
            [(load_audio(folder / r['path']), r['label']) for r in clips])
    return made


@pytest.fixture(scope='module')
def dataset(sessions):
    return prepare_voices(list(sessions.values()), str(BASE_MODEL), augment_rounds=1,
                          log=lambda message: None)


def test_label_covering_most_of_the_utterance_wins():
    intervals = [Interval(0.0, 1.0, 'happy'), Interval(1.0, 3.0, 'sad')]
    assert label_utterance(intervals, 0.5, 2.5) == ('sad', 0.75)
    # 40% happy, 40% sad, 20% unlabelled: no label covers most of it
    assert label_utterance([Interval(0.0, 0.4, 'happy'), Interval(0.6, 1.0, 'sad')],
                           0.0, 1.0)[0] is None
    assert label_utterance(intervals, 5.0, 6.0) == (None, 0.0)


def test_prepare_cuts_one_utterance_per_sentence_with_its_label(sessions, dataset):
    assert sorted(set(dataset.session_ids)) == ['rep01', 'rep02']
    assert set(dataset.persons) == {ACTOR}
    assert dataset.features.shape == (10, 350) and dataset.augmented.shape == (1, 10, 350)
    assert dataset.info['sessions']['rep01']['samples kept'] == len(LABELS)
    for session_id, folder in sessions.items():
        rows = np.flatnonzero(dataset.session_ids == session_id)
        rows = rows[np.argsort(dataset.start_s[rows])]
        truth = read_truth_csv(folder / 'labels.csv', 0.0)
        assert list(dataset.labels[rows]) == [i.label for i in truth]
        for row, interval in zip(rows, truth):  # each utterance lies on its sentence
            middle = (dataset.start_s[row] + dataset.end_s[row]) / 2
            assert interval.start < middle < interval.end
    assert not np.allclose(dataset.features, dataset.augmented[0])
    path = dataset.save(pathlib.Path(sessions['rep01']).parent / 'voice_dataset.npz')
    again = VoiceDataset.load(path)
    assert np.array_equal(again.features, dataset.features)
    assert list(again.session_ids) == list(dataset.session_ids)


def test_split_refuses_a_recording_on_both_sides(dataset):
    with pytest.raises(LeakageError, match=r"both sides of the split: \['rep02'\]"):
        split_by_session(dataset, test_sessions=['rep02'], validation_sessions=['rep02'])
    with pytest.raises(LeakageError, match='no samples'):
        split_by_session(dataset, test_sessions=['rep03'])
    with pytest.raises(ValueError, match="session 'rep01' is in dataset 1 and dataset 2"):
        VoiceDataset.concatenate([dataset, dataset.subset([0])], {})
    split = split_by_session(dataset, test_sessions=['rep02'])
    assert split.sessions() == {'train': ['rep01'], 'validation': [], 'test': ['rep02']}


def test_cli_refuses_leaking_split_and_says_so(dataset, tmp_path, capsys):
    path = dataset.save(tmp_path / 'voice_dataset.npz')
    code = fine_tune_cli.main(['--modality', 'voice', '--dataset', str(path), '--output',
                               str(tmp_path / 'p.keras'), '--test-sessions', 'rep01',
                               '--validation-sessions', 'rep01'])
    assert code == 2
    assert "recordings on both sides of the split: ['rep01']" in capsys.readouterr().err
    assert not (tmp_path / 'p.keras').exists()


def test_freeze_then_unfreeze_gives_a_model_the_voice_node_loads(dataset, sessions, tmp_path):
    from mika_voice.audio_decoding import StreamFormat
    from mika_voice.training.corpus import load_audio
    from mika_voice.voice_model import load_voice_model, save_voice_model
    from mika_voice.voice_parameters import assemble_voice_pipeline
    from mika_personal.voice_data import voice_node_values

    values = voice_node_values()
    generic = load_voice_model(BASE_MODEL)
    split = split_by_session(dataset, test_sessions=['rep02'])
    config = VoiceTuningConfig(head_epochs=3, unfreeze_stages=1, unfreeze_epochs=2,
                               l2_sp=0.01, batch_size=8)  # L2-SP only while training
    history = []
    personal = tune(generic, split, [config], values, 'test-personal',
                    {'command': 'pytest'}, log=history.append)
    assert history[0].startswith('stage head: ') and 'epochs_run 3' in history[0]
    assert history[1].startswith('stage top 1 dense layer(s): ')
    stages = personal.metadata.training['variants'][0]['stages']
    head, unfrozen = (s['trainable_parameters'] for s in stages)
    members = networks(personal.model)
    assert len(members) == len(networks(generic.model)) == 3
    assert head == 3 * (256 * len(EMOTION_LABELS) + len(EMOTION_LABELS))  # the output layers
    assert unfrozen == head + 3 * (512 * 256 + 256)  # plus the top hidden layer
    # dense layers (first, attention gate, top, output): the top two moved, the rest not
    tuned, base = ([layer.get_weights()[0] for layer in network.layers
                    if type(layer).__name__ == 'Dense']
                   for network in (members[0], networks(generic.model)[0]))
    assert [np.array_equal(t, b) for t, b in zip(tuned, base)] == [True, True, False, False]
    # the person's own statistics are the node normaliser's prior
    assert np.allclose(personal.metadata.population_mean,
                       split.train.features.astype(np.float64).mean(axis=0), atol=1e-3)
    assert personal.metadata.training['sessions']['test'] == ['rep02']

    path = save_voice_model(personal.model, tmp_path / 'personal.keras', personal.metadata)
    loaded = load_voice_model(path)
    pipeline, _ = assemble_voice_pipeline(values, loaded)
    pipeline.set_format(StreamFormat.from_fields(16000, 1, 'S16LE'))
    with open(ravdess_dir() / 'labels.csv', newline='') as handle:
        row = next(r for r in csv.DictReader(handle) if r['speaker_or_subject'] == ACTOR
                   and r['label'] == 'surprise')
    audio = np.concatenate([np.zeros(8000, np.float32), load_audio(ravdess_dir() / row['path']),
                            np.zeros(16000, np.float32)])
    pcm = (np.clip(audio, -1, 1) * 32767).astype('<i2').tobytes()
    utterances = pipeline.accept_chunk(pcm, 0.0).utterances
    finals = [u for u in utterances if not u.running]
    assert len(finals) == 1
    estimate = pipeline.classify(finals[0])
    assert estimate.probabilities.shape == (len(EMOTION_LABELS),)
    assert abs(float(estimate.probabilities.sum()) - 1.0) < 1e-4
    probs = probabilities(loaded, split.test, values)
    assert np.allclose(probs, probabilities(personal, split.test, values), atol=1e-5)


def test_ensemble_of_variants_is_one_file_with_a_comparison_report(dataset, tmp_path):
    from mika_voice.voice_model import load_voice_model

    path = dataset.save(tmp_path / 'voice_dataset.npz')
    output = tmp_path / 'ensemble.keras'
    code = fine_tune_cli.main([
        '--modality', 'voice', '--dataset', str(path), '--output', str(output),
        '--test-sessions', 'rep02', '--head-epochs', '2', '--unfreeze-stages', '0',
        '--batch-size', '8', '--report-dir', str(tmp_path / 'report'),
        '--variant', 'learning_rate=0.002', '--variant', 'head_units=16,dropout=0.3'])
    assert code == 0
    loaded = load_voice_model(output)
    members = networks(loaded.model)
    assert len(members) == 6  # two variants of the shipped 3-network ensemble
    rows = np.random.default_rng(0).standard_normal((4, 350)).astype(np.float32)
    average = np.mean([m.predict_on_batch(rows) for m in members], axis=0)
    assert np.allclose(loaded.logits(rows), average, atol=1e-5)
    assert [v['config']['head_units'] for v in loaded.metadata.training['variants']] == [0, 16]
    report = tmp_path / 'report'
    assert {p.name for p in report.iterdir()} == {
        'voice.json', 'voice.md', 'voice_confusion.png'}
    assert '| accuracy |' in (report / 'voice.md').read_text()


def test_validation_session_drives_early_stopping(dataset):
    from mika_personal.voice_data import voice_node_values
    from mika_voice.voice_model import load_voice_model

    split = split_by_session(dataset, validation_sessions=['rep02'])
    assert split.sessions() == {'train': ['rep01'], 'validation': ['rep02'], 'test': []}
    personal = tune(load_voice_model(BASE_MODEL), split,
                    [VoiceTuningConfig(head_epochs=30, unfreeze_stages=0, patience=1,
                                       batch_size=8)],
                    voice_node_values(), 'test-validation', {}, log=lambda message: None)
    stage, = personal.metadata.training['variants'][0]['stages']
    assert {'best_epoch', 'val_loss', 'val_accuracy'} <= set(stage)
    # 5 validation utterances are too few to refit the temperature
    assert personal.metadata.training['temperature'] == 'kept from the base model'
