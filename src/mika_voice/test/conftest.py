"""Shared fixtures of mika_voice's tests: real RAVDESS clips and a real voice model.

Data come from ``$MIKA_DATA`` or ``<repo>/../shared/data``; tests that need them skip
with the reason when they are absent.
"""
import csv
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
PACKAGE = pathlib.Path(__file__).resolve().parents[1]
SHIPPED_MODEL = PACKAGE / 'models' / 'voice_emotion.keras'


def data_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get('MIKA_DATA', REPO.parent / 'shared' / 'data'))


def ravdess_rows():
    labels = data_dir() / 'ravdess' / 'labels.csv'
    if not labels.is_file():
        pytest.skip(f'RAVDESS not found at {labels} (set MIKA_DATA)')
    with open(labels, newline='') as handle:
        return [row for row in csv.DictReader(handle) if row['label']]


def load_clip(row):
    import soundfile
    samples, rate = soundfile.read(data_dir() / 'ravdess' / row['path'], dtype='float32')
    assert rate == 16000
    return samples


@pytest.fixture(scope='session')
def ravdess_clip():
    """One real RAVDESS sentence (16 kHz mono) with leading and trailing silence."""
    row = next(r for r in ravdess_rows() if r['label'] == 'angry')
    return load_clip(row)


@pytest.fixture(scope='session')
def quiet_sad_clip():
    """A quiet RAVDESS sad take (actor 05, active level about -50 dBFS)."""
    row = next(r for r in ravdess_rows() if r['path'].endswith('03-01-04-01-01-01-05.flac'))
    return load_clip(row)


@pytest.fixture(scope='session')
def actor_clips():
    """Twelve RAVDESS sentences, one from each of actors 01-12, of varied emotions."""
    rows = ravdess_rows()
    chosen = []
    for actor in range(1, 13):
        own = [r for r in rows if r['speaker_or_subject'] == f'ravdess_{actor:02d}']
        chosen.append(own[actor * 7 % len(own)])
    return [load_clip(row) for row in chosen]


@pytest.fixture(scope='session')
def voice_model_path(tmp_path_factory):
    """The shipped model if it exists, else a small real model trained here in seconds
    on real RAVDESS clips (features, per-speaker statistics and the .keras file exactly
    as the training command writes them), so node tests never depend on faked outputs."""
    if SHIPPED_MODEL.is_file():
        return SHIPPED_MODEL
    pytest.importorskip('keras')
    from mika_common.emotions import EMOTION_LABELS
    from mika_voice.testing import train_tiny_voice_model

    rows = ravdess_rows()
    chosen = []
    for label in EMOTION_LABELS:
        chosen += [r for r in rows if r['label'] == label][:6]
    return train_tiny_voice_model(
        [load_clip(r) for r in chosen], [r['speaker_or_subject'] for r in chosen],
        [r['label'] for r in chosen],
        tmp_path_factory.mktemp('voice_model') / 'tiny_voice.keras', 'test-fixture-tiny')


@pytest.fixture(scope='session')
def second_voice_model_path(tmp_path_factory):
    """Another small real model, trained in seconds on other RAVDESS clips than the
    fallback of ``voice_model_path`` (for swapping models at runtime)."""
    pytest.importorskip('keras')
    from mika_common.emotions import EMOTION_LABELS
    from mika_voice.testing import train_tiny_voice_model

    rows = ravdess_rows()
    chosen = []
    for label in EMOTION_LABELS:
        chosen += [r for r in rows if r['label'] == label][6:9]
    return train_tiny_voice_model(
        [load_clip(r) for r in chosen], [r['speaker_or_subject'] for r in chosen],
        [r['label'] for r in chosen],
        tmp_path_factory.mktemp('second_voice_model') / 'second.keras', 'test-second-voice')
