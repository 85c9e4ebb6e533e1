"""Training helpers: corpus reading, speaker-disjoint splits, augmentation, metrics."""
import os
from pathlib import Path

import numpy as np
import pytest

from mika_common.emotions import EMOTION_LABELS
from mika_voice import features
from mika_voice.training import corpus as corpus_module
from mika_voice.training import train_voice
from mika_voice.training.corpus import (CorpusFeatures, augment, clip_speech, corpus_features,
                                        load_audio, node_utterances, read_corpus)

DATA = Path(os.environ.get('MIKA_DATA',
                          Path(__file__).resolve().parents[3].parent / 'shared' / 'data'))
needs_data = pytest.mark.skipif(not (DATA / 'ravdess' / 'labels.csv').is_file(),
                                reason=f'RAVDESS not found under {DATA} (set MIKA_DATA)')


@needs_data
def test_ravdess_has_seven_classes_and_twenty_speakers():
    clips = read_corpus(DATA / 'ravdess')
    assert len(clips) == 1040  # calm (empty label) skipped
    assert {c.label for c in clips} == set(EMOTION_LABELS)
    assert len({c.speaker for c in clips}) == 20
    assert all(c.path.is_file() for c in clips[:5])


@needs_data
def test_emodb_boredom_is_skipped():
    clips = read_corpus(DATA / 'emodb')
    assert {c.label for c in clips} == set(EMOTION_LABELS) - {'surprise'}
    assert len({c.speaker for c in clips}) == 10


def test_missing_labels_csv_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match='labels.csv'):
        read_corpus(tmp_path)


@needs_data
def test_augmented_clip_is_new_finite_speech():
    audio = load_audio(read_corpus(DATA / 'ravdess')[0].path)
    rng = np.random.default_rng(3)
    for _ in range(4):
        changed = augment(audio, rng)
        assert changed.dtype == np.float32 and np.all(np.isfinite(changed))
        assert 0.85 < changed.size / audio.size < 1.15
        assert not np.array_equal(changed[:audio.size], audio[:changed.size])
        features.extract_features(changed, features.SAMPLE_RATE)


def fake_corpus(speakers=8, per_speaker=14, dims=5, rounds=2):
    rng = np.random.default_rng(0)
    n = speakers * per_speaker
    labels = np.array([EMOTION_LABELS[i % 7] for i in range(n)])
    return CorpusFeatures(
        'fake', rng.standard_normal((n, dims)).astype(np.float32),
        rng.standard_normal((rounds, n, dims)).astype(np.float32), labels,
        np.repeat([f's{i:02d}' for i in range(speakers)], per_speaker),
        np.array([f'{i}.flac' for i in range(n)]), [f'f{i}' for i in range(dims)], 'v')


def test_folds_are_disjoint_and_cover_every_speaker():
    data = fake_corpus()
    folds = train_voice.speaker_folds(data.speakers, 4)
    flat = [s for fold in folds for s in fold]
    assert sorted(flat) == sorted(set(data.speakers)) and len(flat) == len(set(flat))


def test_training_rows_come_only_from_training_speakers():
    data = fake_corpus()
    train = np.flatnonzero(np.isin(data.speakers, ['s00', 's01', 's02']))
    x, y = train_voice.training_rows(data, train, train_voice.TrainConfig())
    assert len(x) == len(train) * 3  # originals + 2 augmentation rounds
    assert np.array_equal(y[:len(train)], train_voice.encode(data.labels[train]))
    assert np.allclose(x[:len(train) // 3].mean(axis=0), 0.0, atol=1e-5)  # s00 centred


def test_metrics_restricted_to_shared_classes():
    y = np.array([0, 0, 1, 1, 5])
    logits = np.full((5, 7), -1.0)
    logits[[0, 1, 2, 3], [0, 1, 1, 5]] = 3.0  # clip 3 best matches surprise
    logits[3, 0] = 2.0                        # ... and angry next
    result = train_voice.metrics(y, logits, classes=[0, 1])
    assert result['clips'] == 4
    assert result['accuracy'] == pytest.approx(0.5)
    assert result['confusion'] == [[1, 1], [1, 1]]
    assert result['largest_prediction_share'] == {'label': 'angry', 'share': 0.5}


def ravdess_like_corpus(actors=6):
    data = fake_corpus(speakers=actors)
    data.speakers = np.array([f'ravdess_{int(s[1:]) + 1:02d}' for s in data.speakers])
    return data


def test_excluded_speakers_are_gone_with_their_augmented_copies():
    data = ravdess_like_corpus()
    kept = train_voice.select_speakers(data, exclude_speakers=['05', 'ravdess_06'])
    assert sorted(set(kept.speakers)) == ['ravdess_01', 'ravdess_02', 'ravdess_03',
                                          'ravdess_04']
    rows = np.flatnonzero(np.isin(data.speakers, kept.speakers))
    assert np.array_equal(kept.features, data.features[rows])
    assert np.array_equal(kept.augmented, data.augmented[:, rows])
    assert np.array_equal(kept.labels, data.labels[rows])
    only = train_voice.select_speakers(data, train_speakers=['01', '02', 'ravdess_03'])
    assert sorted(set(only.speakers)) == ['ravdess_01', 'ravdess_02', 'ravdess_03']
    assert len(train_voice.select_speakers(data).labels) == len(data.labels)


def test_a_speaker_name_that_matches_nobody_is_refused():
    data = ravdess_like_corpus()
    with pytest.raises(ValueError, match="'17' is not in corpus"):
        train_voice.select_speakers(data, exclude_speakers=['17'])  # actors 01-06 only
    with pytest.raises(ValueError, match='need at least 2'):
        train_voice.select_speakers(data, train_speakers=['01'])


def test_speaker_sets_are_described_as_ranges():
    assert train_voice.describe_speakers(
        [f'ravdess_{i:02d}' for i in (1, 2, 3, 4, 7, 9, 10)]) == '01-04,07,09-10'
    assert train_voice.describe_speakers(['03', '08']) == '03,08'


def test_speaker_options_of_the_command():
    args = train_voice.parse_args(['--output-dir', 'x', '--exclude-speakers', '15', '16'])
    assert args.exclude_speakers == ['15', '16'] and args.train_speakers is None
    assert args.segmentation == 'node' and args.test_segmentation is None
    with pytest.raises(SystemExit):
        train_voice.parse_args(['--output-dir', 'x', '--exclude-speakers', '15',
                                '--train-speakers', '01'])


@needs_data
def test_node_segmenter_cuts_the_speech_out_of_a_clip():
    audio = load_audio(read_corpus(DATA / 'ravdess')[0].path)
    rng = np.random.default_rng(0)
    found = node_utterances(audio, rng)
    assert len(found) == 1
    # RAVDESS clips carry about a second of silence; the node keeps speech plus padding
    assert 0.5 * features.SAMPLE_RATE < found[0].size < audio.size
    speech, count = clip_speech(audio, 'node', rng)
    assert count == 1 and abs(speech.size - found[0].size) < 0.1 * features.SAMPLE_RATE
    assert clip_speech(audio, 'whole', rng) == (audio, 1)
    silence = np.zeros(3 * features.SAMPLE_RATE, np.float32)
    assert node_utterances(silence, rng) == []
    kept, count = clip_speech(silence, 'node', rng)
    assert count == 0 and kept is silence  # no utterance: the row keeps the clip, counted 0
    with pytest.raises(ValueError, match='segmentation must be one of'):
        clip_speech(audio, 'vad', rng)


@pytest.mark.skipif(not (DATA / 'emodb' / 'labels.csv').is_file(),
                    reason=f'EmoDB not found under {DATA} (set MIKA_DATA)')
def test_speech_running_to_the_end_of_a_clip_is_one_utterance():
    """EmoDB's 03a05Nd speaks to its last frame: the gap after it was too short to end the
    utterance, and the clip counted as one where the node finds nothing."""
    clip = next(c for c in read_corpus(DATA / 'emodb') if c.path.name == '03a05Nd.flac')
    audio = load_audio(clip.path)
    found = node_utterances(audio, np.random.default_rng(0))
    assert len(found) == 1 and 0.8 * audio.size < found[0].size


def tiny_corpus(folder: Path, clips: int = 2) -> Path:
    """A corpus folder holding the first RAVDESS clips, each its own speaker."""
    (folder / 'wav').mkdir(parents=True)
    rows = ['path,label,speaker_or_subject']
    for index, clip in enumerate(read_corpus(DATA / 'ravdess')[:clips]):
        target = folder / 'wav' / clip.path.name
        target.write_bytes(clip.path.read_bytes())
        rows.append(f'wav/{clip.path.name},{clip.label},s{index}')
    (folder / 'labels.csv').write_text('\n'.join(rows) + '\n')
    return folder


@needs_data
def test_feature_cache_is_keyed_by_segmentation(tmp_path, monkeypatch):
    corpus = tiny_corpus(tmp_path / 'tiny')
    cache = tmp_path / 'cache'
    whole = corpus_features(corpus, cache, augment_rounds=0, log=lambda _: None)
    node = corpus_features(corpus, cache, augment_rounds=0, log=lambda _: None,
                           segmentation='node')
    assert len(list(cache.glob('tiny-*.npz'))) == 2
    assert whole.segment_counts is None and node.segment_counts.tolist() == [1, 1]
    assert not np.allclose(node.features, whole.features)  # padding, noise floor, cut
    again = corpus_features(corpus, cache, augment_rounds=0, log=lambda _: None,
                            segmentation='node')
    assert np.array_equal(again.features, node.features)
    assert again.segmentation == 'node' and again.segment_counts.tolist() == [1, 1]
    # new segmenter defaults cut other utterances: the node cache is not reused
    changed = dict(corpus_module.node_voice_values(), padding_s=0.5)
    monkeypatch.setattr(corpus_module, 'node_voice_values', lambda: changed)
    wider = corpus_features(corpus, cache, augment_rounds=0, log=lambda _: None,
                            segmentation='node')
    assert len(list(cache.glob('tiny-*.npz'))) == 3
    assert not np.allclose(wider.features, node.features)


@needs_data
def test_worker_processes_compute_the_same_features(tmp_path):
    corpus = tiny_corpus(tmp_path / 'tiny', clips=3)
    one = corpus_features(corpus, tmp_path / 'one', augment_rounds=1, log=lambda _: None,
                          segmentation='node')
    two = corpus_features(corpus, tmp_path / 'two', augment_rounds=1, log=lambda _: None,
                          segmentation='node', jobs=2)
    # the same draws; float sums may round differently in another process's thread pools
    np.testing.assert_allclose(one.features, two.features, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(one.augmented, two.augmented, rtol=1e-5, atol=1e-5)
    assert one.segment_counts.tolist() == two.segment_counts.tolist()
    assert not np.allclose(one.augmented[0], one.features)  # the copies are augmented
    with pytest.raises(ValueError, match='jobs must be at least 1'):
        corpus_features(corpus, tmp_path / 'none', jobs=0)


def test_cross_validation_can_test_on_features_computed_another_way():
    data = fake_corpus()
    config = train_voice.TrainConfig(kind='logreg')
    same = train_voice.cross_validate(data, config, 4, log=lambda _: None)
    other = fake_corpus()
    other.features = other.features[::-1].copy()
    changed = train_voice.cross_validate(data, config, 4, log=lambda _: None, test_data=other)
    assert not np.allclose(same['offline_logits'], changed['offline_logits'])
    shuffled = fake_corpus()
    shuffled.paths = shuffled.paths[::-1].copy()
    with pytest.raises(ValueError, match='same clips'):
        train_voice.cross_validate(data, config, 4, log=lambda _: None, test_data=shuffled)


def test_stream_accuracy_is_reported_by_how_much_of_the_speaker_was_heard():
    positions = np.array([1, 2, 3, 4, 5, 6, 7, 20, 21, 30, 1, 25])
    correct = np.array([0, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0], dtype=bool)
    by_position = train_voice.stream_accuracy_by_position(correct, positions)
    assert by_position == {'1-5': pytest.approx(2 / 6), '6-20': 1.0, '21+': pytest.approx(2 / 3)}
    order = train_voice.stream_order(np.array(['a', 'b', 'a', 'b', 'a']), seed=0)
    assert sorted(map(sorted, map(list, order))) == [[0, 2, 4], [1, 3]]
