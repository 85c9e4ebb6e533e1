"""The one utterance-level feature function shared by the node, training and evaluation.

ROS-free. A model file stores :data:`FEATURE_VERSION` and :func:`feature_names`; the
loader refuses a model whose version differs, so a change here that alters any value
must bump the version.

Every spectral feature is computed from one STFT, so 3 s of speech at 16 kHz costs about
20 ms on one core (budget 40 ms). Tonnetz is computed from the STFT chroma (2 ms) instead
of librosa's default constant-Q chroma (33-41 ms alone).
"""
from __future__ import annotations

from functools import lru_cache
from typing import List, Tuple

import numpy as np

#: Bump whenever any extracted value changes (window, stats, feature list).
FEATURE_VERSION = 'mika-voice-librosa-2'
#: Feature set names accepted by :func:`extract_features`.
FEATURE_SET_LIBROSA = 'librosa'
FEATURE_SET_LIBROSA_EGEMAPS = 'librosa+egemaps'
FEATURE_SETS = (FEATURE_SET_LIBROSA, FEATURE_SET_LIBROSA_EGEMAPS)

SAMPLE_RATE = 16000
N_FFT = 512            # 32 ms window at 16 kHz
HOP_LENGTH = 160       # 10 ms hop
N_MFCC = 20
N_MELS = 40
YIN_FMIN = 65.0
YIN_FMAX = 500.0
YIN_FRAME_LENGTH = 1024
TRIM_TOP_DB = 35.0      # leading/trailing silence more than this below the peak is cut

MIN_DURATION_S = 0.25   # shorter than this (after trimming) carries no usable prosody
MAX_ABS_AMPLITUDE = 16.0  # float audio is expected in [-1, 1]; far beyond means wrong scaling
SILENCE_RMS = 1e-4      # about -80 dBFS: digital silence, nothing to classify

_MEAN_STD = ('mean', 'std')
_WIDE = ('mean', 'std', 'p10', 'p90')
#: (name, rows, statistics over frames); 'voiced_mfcc' uses voiced frames only.
_FRAME_GROUPS: Tuple[Tuple[str, int, Tuple[str, ...]], ...] = (
    ('mfcc', N_MFCC, _WIDE),
    ('mfcc_delta', N_MFCC, _MEAN_STD),
    ('mfcc_delta2', N_MFCC, _MEAN_STD),
    ('voiced_mfcc', N_MFCC, ('mean',)),
    ('chroma', 12, _MEAN_STD),
    ('tonnetz', 6, _MEAN_STD),
    ('logmel', N_MELS, _MEAN_STD),
    ('spectral_contrast', 7, _MEAN_STD),
    ('spectral_flatness_db', 1, _MEAN_STD),
    ('spectral_centroid', 1, _MEAN_STD),
    ('spectral_rolloff', 1, _MEAN_STD),
    ('spectral_bandwidth', 1, _MEAN_STD),
    ('zero_crossing_rate', 1, _MEAN_STD),
    ('rms_db', 1, _WIDE),
)
_CONTOURS = ('pitch_semitones', 'pitch_change', 'rms_contour_db')
_CONTOUR_STATS = ('mean', 'std', 'p10', 'p50', 'p90', 'range', 'slope')
_GLOBAL_NAMES = ('pitch_voiced_fraction', 'voiced_segments_per_s', 'voiced_segment_mean_s',
                 'tempo_bpm', 'duration_s')


@lru_cache(maxsize=None)
def _egemaps_extractor():
    """Build the openSMILE eGeMAPS v02 functionals extractor once (optional dependency)."""
    try:
        import opensmile
    except ImportError as error:
        raise ValueError(
            f"feature set '{FEATURE_SET_LIBROSA_EGEMAPS}' needs the optional package "
            "'opensmile' (pip install 'opensmile>=2.5,<3')") from error
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals)


def feature_names(feature_set: str = FEATURE_SET_LIBROSA) -> List[str]:
    """Names of the columns :func:`extract_features` returns, in order."""
    _check_feature_set(feature_set)
    names = []
    for group, size, stats in _FRAME_GROUPS:
        for stat in stats:
            names += [f'{group}_{i}_{stat}' if size > 1 else f'{group}_{stat}'
                      for i in range(size)]
    for contour in _CONTOURS:
        names += [f'{contour}_{stat}' for stat in _CONTOUR_STATS]
    names += list(_GLOBAL_NAMES)
    if feature_set == FEATURE_SET_LIBROSA_EGEMAPS:
        names += ['egemaps_' + name for name in _egemaps_extractor().feature_names]
    return names


def feature_version(feature_set: str = FEATURE_SET_LIBROSA) -> str:
    """Version string stored in a model file; includes the openSMILE version when used."""
    _check_feature_set(feature_set)
    if feature_set == FEATURE_SET_LIBROSA:
        return FEATURE_VERSION
    _egemaps_extractor()  # a clear error when opensmile is not installed
    import opensmile
    return f'{FEATURE_VERSION}+egemapsv02-opensmile-{opensmile.__version__}'


def _check_feature_set(feature_set: str) -> None:
    if feature_set not in FEATURE_SETS:
        raise ValueError(f'unknown feature set {feature_set!r}; choose one of {FEATURE_SETS}')


def validate_samples(samples, sample_rate: int) -> np.ndarray:
    """Return ``samples`` as float32 mono at :data:`SAMPLE_RATE`, or raise ``ValueError``."""
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f'sample_rate must be a positive integer, got {sample_rate!r}')
    audio = np.asarray(samples)
    if audio.ndim != 1:
        raise ValueError(f'expected mono 1-D samples, got shape {audio.shape}')
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(
            f'expected float samples in [-1, 1], got dtype {audio.dtype} '
            '(convert integer PCM by dividing by its full scale first)')
    audio = audio.astype(np.float32, copy=False)
    if not np.all(np.isfinite(audio)):
        raise ValueError('samples contain NaN or infinite values')
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > MAX_ABS_AMPLITUDE:
        raise ValueError(
            f'peak amplitude {peak:.1f} is far outside [-1, 1]: integer PCM not scaled?')
    if sample_rate != SAMPLE_RATE:
        import librosa
        audio = librosa.resample(audio, orig_sr=int(sample_rate), target_sr=SAMPLE_RATE,
                                 res_type='soxr_hq').astype(np.float32)
    if audio.size < MIN_DURATION_S * SAMPLE_RATE:
        raise ValueError(
            f'clip is {audio.size / SAMPLE_RATE:.3f} s long; at least {MIN_DURATION_S} s needed')
    if float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) < SILENCE_RMS:
        raise ValueError('clip is silent (RMS below -80 dBFS)')
    return audio


def extract_features(samples, sample_rate: int,
                     feature_set: str = FEATURE_SET_LIBROSA) -> np.ndarray:
    """Summarise one utterance into a fixed-length float32 vector (see :func:`feature_names`).

    ``samples``: 1-D float audio in [-1, 1] at any rate (resampled to 16 kHz).
    Raises ``ValueError`` for input that would give a meaningless vector: not 1-D, not
    float, NaN/inf, shorter than :data:`MIN_DURATION_S` after trimming silence, or silent.
    """
    import librosa

    _check_feature_set(feature_set)
    audio = validate_samples(samples, sample_rate)
    trimmed, _ = librosa.effects.trim(audio, top_db=TRIM_TOP_DB,
                                      frame_length=N_FFT, hop_length=HOP_LENGTH)
    if trimmed.size < MIN_DURATION_S * SAMPLE_RATE:
        raise ValueError(
            f'only {trimmed.size / SAMPLE_RATE:.3f} s of sound after trimming silence; '
            f'at least {MIN_DURATION_S} s needed')
    y = trimmed
    sr = SAMPLE_RATE

    magnitude = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH, center=True))
    power = magnitude ** 2
    mel = librosa.feature.melspectrogram(S=power, sr=sr, n_mels=N_MELS, fmax=sr / 2)
    logmel = librosa.power_to_db(mel, ref=1.0, top_db=None)
    mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=N_MFCC)
    # MIN_DURATION_S guarantees at least 26 frames, more than the delta window of 9.
    mfcc_delta = librosa.feature.delta(mfcc, width=9, mode='nearest')
    mfcc_delta2 = librosa.feature.delta(mfcc, order=2, width=9, mode='nearest')
    chroma = librosa.feature.chroma_stft(S=power, sr=sr, n_fft=N_FFT)
    tonnetz = librosa.feature.tonnetz(chroma=chroma)
    centroid = librosa.feature.spectral_centroid(S=magnitude, sr=sr, n_fft=N_FFT)
    rolloff = librosa.feature.spectral_rolloff(S=magnitude, sr=sr, n_fft=N_FFT)
    bandwidth = librosa.feature.spectral_bandwidth(S=magnitude, sr=sr, n_fft=N_FFT)
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP_LENGTH)
    rms = librosa.feature.rms(S=magnitude, frame_length=N_FFT)
    rms_db = 20.0 * np.log10(np.maximum(rms, 1e-5))

    contrast = librosa.feature.spectral_contrast(S=magnitude, sr=sr, n_fft=N_FFT)
    flatness_db = 10.0 * np.log10(np.maximum(
        librosa.feature.spectral_flatness(S=magnitude), 1e-10))

    f0 = librosa.yin(y, fmin=YIN_FMIN, fmax=YIN_FMAX, sr=sr,
                     frame_length=YIN_FRAME_LENGTH, hop_length=HOP_LENGTH)
    frames = min(f0.size, rms_db.shape[1], mfcc.shape[1])
    loud = rms_db[0, :frames] > (rms_db[0, :frames].max() - 30.0)
    in_range = (f0[:frames] > YIN_FMIN * 1.05) & (f0[:frames] < YIN_FMAX * 0.95)
    voiced = loud & in_range
    voiced_mfcc = mfcc[:, :frames][:, voiced] if voiced.sum() >= 2 else mfcc

    blocks = {'mfcc': mfcc, 'mfcc_delta': mfcc_delta, 'mfcc_delta2': mfcc_delta2,
              'voiced_mfcc': voiced_mfcc, 'chroma': chroma, 'tonnetz': tonnetz,
              'logmel': logmel, 'spectral_contrast': contrast,
              'spectral_flatness_db': flatness_db, 'spectral_centroid': centroid / 1000.0,
              'spectral_rolloff': rolloff / 1000.0, 'spectral_bandwidth': bandwidth / 1000.0,
              'zero_crossing_rate': zcr, 'rms_db': rms_db}
    parts = []
    for group, _, stats in _FRAME_GROUPS:
        parts += [_frame_stat(blocks[group], stat) for stat in stats]

    semitones = 12.0 * np.log2(f0[:frames] / 100.0)
    both_voiced = voiced[1:] & voiced[:-1]
    pitch_change = np.abs(np.diff(semitones))[both_voiced]
    parts.append(_contour_stats(semitones[voiced]))
    parts.append(_contour_stats(pitch_change))
    parts.append(_contour_stats(rms_db[0, :frames][loud]))

    onset = librosa.onset.onset_strength(S=logmel, sr=sr, hop_length=HOP_LENGTH)
    tempo = librosa.feature.tempo(onset_envelope=onset, sr=sr, hop_length=HOP_LENGTH)
    duration = y.size / sr
    segment_starts = int(voiced[0]) + int(np.sum(voiced[1:] & ~voiced[:-1]))
    voiced_seconds = voiced.sum() * HOP_LENGTH / sr
    parts.append(np.array([voiced.mean(),
                           segment_starts / duration,
                           voiced_seconds / max(segment_starts, 1),
                           float(tempo[0]) / 100.0,
                           duration], dtype=np.float64))

    if feature_set == FEATURE_SET_LIBROSA_EGEMAPS:
        parts.append(_egemaps_extractor().process_signal(y, sr).to_numpy().reshape(-1))

    vector = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parts])
    if not np.all(np.isfinite(vector)):
        raise ValueError('feature extraction produced non-finite values')
    return vector.astype(np.float32)


def _frame_stat(block: np.ndarray, stat: str) -> np.ndarray:
    if stat == 'mean':
        return block.mean(axis=1)
    if stat == 'std':
        return block.std(axis=1)
    return np.percentile(block, 10 if stat == 'p10' else 90, axis=1)


def _contour_stats(values: np.ndarray) -> np.ndarray:
    """Mean, spread, percentiles, range and linear slope (per second) of a contour."""
    if values.size < 2:
        return np.zeros(len(_CONTOUR_STATS))
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    seconds = np.arange(values.size) * HOP_LENGTH / SAMPLE_RATE
    slope = np.polyfit(seconds, values, 1)[0] if seconds[-1] > 0 else 0.0
    return np.array([values.mean(), values.std(), p10, p50, p90, p90 - p10, slope])


def warm_up() -> float:
    """Run the extractor once on synthetic audio so numba compiles now, not on the first
    utterance, one process of this machine at a time (see :mod:`mika_voice.feature_cache`);
    returns the seconds it took, waiting included."""
    import time
    from mika_voice.feature_cache import compile_lock
    start = time.perf_counter()
    t = np.arange(int(0.6 * SAMPLE_RATE)) / SAMPLE_RATE
    tone = 0.2 * np.sin(2 * np.pi * 180.0 * t) * (1.0 + 0.5 * np.sin(2 * np.pi * 3.0 * t))
    rng = np.random.default_rng(0)
    tone = (tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    with compile_lock():
        extract_features(tone, SAMPLE_RATE)
    return time.perf_counter() - start
