"""The shared feature function on real speech clips, and its refusal of bad input."""
import os
from pathlib import Path

import numpy as np
import pytest

from mika_voice import features

DATA = Path(os.environ.get('MIKA_DATA',
                          Path(__file__).resolve().parents[3].parent / 'shared' / 'data'))
RAVDESS_CLIP = DATA / 'ravdess' / 'wav' / 'Actor_01' / '03-01-05-01-01-01-01.flac'  # angry
EMODB_CLIP = DATA / 'emodb' / 'wav' / '03a01Wa.flac'

pytestmark = pytest.mark.skipif(not RAVDESS_CLIP.is_file(),
                                reason=f'speech samples not found under {DATA} (set MIKA_DATA)')


def read(path):
    import soundfile
    audio, rate = soundfile.read(str(path), dtype='float32')
    return audio, rate


@pytest.fixture(scope='module')
def speech():
    features.warm_up()
    return read(RAVDESS_CLIP)


def test_vector_matches_names_and_is_finite(speech):
    audio, rate = speech
    vector = features.extract_features(audio, rate)
    assert vector.dtype == np.float32
    assert vector.shape == (len(features.feature_names()),)
    assert np.all(np.isfinite(vector))
    assert len(set(features.feature_names())) == vector.size
    assert features.feature_version() == features.FEATURE_VERSION


def test_same_audio_gives_same_vector_and_other_speech_differs(speech):
    audio, rate = speech
    first = features.extract_features(audio, rate)
    assert np.array_equal(first, features.extract_features(audio.copy(), rate))
    other, other_rate = read(EMODB_CLIP)
    assert not np.allclose(first, features.extract_features(other, other_rate))


def test_duration_and_silence_trimming(speech):
    audio, rate = speech
    names = features.feature_names()
    padded = np.concatenate([np.zeros(rate, np.float32), audio, np.zeros(rate, np.float32)])
    duration = names.index('duration_s')
    plain = features.extract_features(audio, rate)[duration]
    assert plain < audio.size / rate - 0.5  # RAVDESS leading/trailing silence is cut
    assert features.extract_features(padded, rate)[duration] == pytest.approx(plain, abs=0.05)


def test_other_sample_rate_is_resampled(speech):
    import librosa
    audio, rate = speech
    upsampled = librosa.resample(audio, orig_sr=rate, target_sr=48000)
    at_16k = features.extract_features(audio, rate)
    at_48k = features.extract_features(upsampled, 48000)
    names = features.feature_names()
    for name in ('duration_s', 'pitch_semitones_p50', 'mfcc_1_mean'):
        index = names.index(name)
        assert at_48k[index] == pytest.approx(at_16k[index], rel=0.05, abs=0.2), name


@pytest.mark.parametrize('bad, rate, message', [
    (np.zeros((16000, 2), np.float32), 16000, 'mono'),
    ((np.ones(16000) * 1000).astype(np.int16), 16000, 'float'),
    (np.full(16000, np.nan, np.float32), 16000, 'NaN'),
    (np.zeros(16000, np.float32), 16000, 'silent'),
    (np.full(16000, 3000.0, np.float32), 16000, 'scaled'),
    (np.zeros(1600, np.float32), 16000, 'at least'),
    (np.zeros(16000, np.float32), 0, 'sample_rate'),
])
def test_bad_input_is_refused_with_a_reason(bad, rate, message):
    with pytest.raises(ValueError, match=message):
        features.extract_features(bad, rate)


def test_a_click_in_silence_is_too_short_after_trimming():
    clip = np.zeros(16000, np.float32)
    clip[8000:8400] = 0.5 * np.sin(np.arange(400) / 3.0)
    with pytest.raises(ValueError, match='after trimming'):
        features.extract_features(clip, 16000)


def test_unknown_feature_set_is_refused(speech):
    audio, rate = speech
    with pytest.raises(ValueError, match='unknown feature set'):
        features.extract_features(audio, rate, feature_set='mfcc-only')


def test_warm_up_returns_its_duration():
    assert features.warm_up() > 0.0
