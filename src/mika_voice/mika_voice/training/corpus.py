"""Labelled corpora (a folder with ``labels.csv``), audio augmentation and a feature cache.

ROS-free. A corpus folder holds ``labels.csv`` with at least ``path,label,speaker_or_subject``;
rows whose label is empty or outside the seven (RAVDESS calm, EmoDB boredom) are skipped.
"""
from __future__ import annotations

import csv
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional

import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_common.workspace import repository_root
from mika_voice import features

#: Augmented copies of every training clip kept in the cache (each a random mix of effects).
DEFAULT_AUGMENT_ROUNDS = 3
#: What the features of a clip are computed on: the whole file (leading and trailing
#: silence included), or the utterance the voice node's segmenter cuts out of it.
SEGMENTATION_WHOLE = 'whole'
SEGMENTATION_NODE = 'node'
SEGMENTATIONS = (SEGMENTATION_WHOLE, SEGMENTATION_NODE)
#: The evaluation bags' audio around a clip: 0.6 s gaps over a -60 dBFS noise floor
#: (mika_evaluation.bag_builder), stored as 16-bit PCM.
NOISE_FLOOR_RMS = 1e-3
CLIP_GAP_S = 0.6
#: How a clip's random draws are seeded (part of the cache key): one generator per clip.
CLIP_RNG_SCHEME = 'per-clip-seed-index'
#: How a clip's last utterance ends (part of the cache key): closed at the clip's end.
CLIP_END_SCHEME = 'closed-at-clip-end'


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str
    speaker: str


@dataclass
class CorpusFeatures:
    """Features of every labelled clip of one corpus, plus augmented copies.

    ``augmented[r, i]`` is round ``r`` of clip ``i``; use them for training rows only.
    """
    name: str
    features: np.ndarray          # (clips, dims) float32
    augmented: np.ndarray         # (rounds, clips, dims) float32
    labels: np.ndarray            # (clips,) str
    speakers: np.ndarray          # (clips,) str
    paths: np.ndarray             # (clips,) str, relative to the corpus folder
    feature_names: List[str]
    feature_version: str
    segmentation: str = SEGMENTATION_WHOLE
    #: Finished utterances the node's segmenter found in each original clip (None: whole).
    segment_counts: Optional[np.ndarray] = None


def read_corpus(folder: Path) -> List[Clip]:
    """The labelled clips of ``folder/labels.csv`` (unlabelled rows skipped)."""
    folder = Path(folder)
    table = folder / 'labels.csv'
    if not table.is_file():
        raise FileNotFoundError(f'{table} not found: a corpus folder needs a labels.csv '
                                'with columns path,label,speaker_or_subject')
    clips = []
    with table.open(newline='') as handle:
        reader = csv.DictReader(handle)
        missing = {'path', 'label', 'speaker_or_subject'} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f'{table} lacks columns {sorted(missing)}')
        for row in reader:
            label = row['label'].strip()
            if label not in EMOTION_LABELS:  # empty, calm, boredom: outside the seven
                continue
            clips.append(Clip(folder / row['path'], label, row['speaker_or_subject'].strip()))
    if not clips:
        raise ValueError(f'{table} has no labelled clips')
    return clips


def load_audio(path: Path) -> np.ndarray:
    """Mono float32 audio at the feature sample rate."""
    import soundfile
    audio, rate = soundfile.read(str(path), dtype='float32', always_2d=True)
    mono = audio.mean(axis=1)
    if rate != features.SAMPLE_RATE:
        import librosa
        mono = librosa.resample(mono, orig_sr=rate, target_sr=features.SAMPLE_RATE)
    return mono.astype(np.float32)


def node_voice_values() -> Mapping[str, Any]:
    """The voice node's default parameter values (those of config/perception.yaml)."""
    from mika_voice.voice_parameters import PARAMETERS
    return {spec.name: spec.default for spec in PARAMETERS}


def segmenter_settings() -> str:
    """The node's default segmenter values as text (part of a feature cache's key)."""
    from mika_voice.voice_parameters import SEGMENTER_PARAMETERS
    values = node_voice_values()
    return ','.join(f'{name}={values[name]}' for name in SEGMENTER_PARAMETERS)


def node_utterances(audio: np.ndarray, rng: np.random.Generator,
                    values: Optional[Mapping[str, Any]] = None) -> List[np.ndarray]:
    """The finished utterances the voice node cuts out of one clip, as on an evaluation bag.

    The clip sits between 0.6 s gaps over a -60 dBFS noise floor, quantised to 16 bits, and
    goes through a fresh segmenter built by :func:`mika_voice.voice_parameters.make_segmenter`
    from ``values`` (default: the node's defaults), so training sees what the node
    classifies (speech plus the segmenter's padding), not the file's silences. Running
    windows are left out: the node updates its normaliser on finished utterances only.
    """
    from mika_voice.voice_parameters import make_segmenter
    sr = features.SAMPLE_RATE
    gap = np.zeros(int(CLIP_GAP_S * sr), dtype=np.float32)
    track = np.concatenate([gap, audio, gap])
    track = track + rng.normal(0.0, NOISE_FLOOR_RMS, track.size)
    track = np.round(np.clip(track, -1.0, 32767 / 32768) * 32768) / 32768
    segmenter, _ = make_segmenter(values or node_voice_values(), sr)
    found = segmenter.push(track.astype(np.float32))
    # The clip's end ends its speech, as the silence after it would in a stream. The gap
    # alone did not: webrtcvad calls up to 0.2 s of it speech, and where speech runs to
    # the end of the file (125 of 454 EmoDB clips) the rest was shorter than the hangover.
    found += segmenter.break_stream(segmenter.buffer.end_index)
    return [u.samples for u in found if not u.running]


def clip_speech(audio: np.ndarray, segmentation: str, rng: np.random.Generator):
    """``(samples, utterances found)`` the features of a clip are computed on.

    ``whole``: the clip itself (count 1). ``node``: the longest utterance of
    :func:`node_utterances`; a clip where the node finds none (it would give no result)
    keeps its whole audio so that every clip has a row, and its count 0 says so.
    """
    if segmentation == SEGMENTATION_WHOLE:
        return audio, 1
    if segmentation != SEGMENTATION_NODE:
        raise ValueError(f'segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}')
    found = node_utterances(audio, rng)
    if not found:
        return audio, 0
    return max(found, key=len), len(found)


def augment(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random mix of speed, pitch, time shift and noise (at least one of them).

    Simulates other voices and microphones; used on training clips only.
    """
    import librosa
    sr = features.SAMPLE_RATE
    effects = rng.random(4) < 0.5
    if not effects.any():
        effects[rng.integers(4)] = True
    speed, pitch, shift, noise = effects
    y = audio
    if speed:  # resampling changes tempo and pitch together (Kaldi-style speed perturbation)
        factor = rng.uniform(0.9, 1.1)
        y = librosa.resample(y, orig_sr=sr, target_sr=int(round(sr / factor)),
                             res_type='soxr_mq')
    if pitch:
        y = librosa.effects.pitch_shift(y, sr=sr, n_steps=rng.uniform(-2.0, 2.0),
                                        n_fft=512, hop_length=128)
    if shift:  # move the utterance within its window; the cut end is lost
        offset = int(rng.uniform(-0.3, 0.3) * sr)
        y = np.roll(y, offset)
        if offset > 0:
            y[:offset] = 0.0
        elif offset < 0:
            y[offset:] = 0.0
    if noise:
        snr_db = rng.uniform(15.0, 35.0)
        sounding = y[np.abs(y) > 1e-4]
        signal_power = np.mean(np.square(sounding)) if sounding.size else 1e-6
        noise_power = signal_power / (10.0 ** (snr_db / 10.0))
        # Brown noise with its slow drift removed (a low rumble), plus white hiss.
        coloured = np.cumsum(rng.standard_normal(y.size)) * 0.02
        coloured -= np.convolve(coloured, np.ones(400) / 400, mode='same')
        white = rng.standard_normal(y.size)
        mix = white + coloured
        y = y + mix / (np.std(mix) + 1e-9) * np.sqrt(noise_power)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def default_cache_dir() -> Path:
    """``$MIKA_CACHE`` or ``<repo>/.cache/mika_voice`` (git-ignored)."""
    if os.environ.get('MIKA_CACHE'):
        return Path(os.environ['MIKA_CACHE'])
    return repository_root() / '.cache' / 'mika_voice'


def _clip_rows(clip: Clip, index: int, augment_rounds: int, feature_set: str, seed: int,
               segmentation: str):
    """Features of one clip and of its augmented copies, and the utterances found.

    The clip's random draws come from generators seeded by ``(seed, index)``: the same
    draws whichever process computes it and however many processes share the corpus.
    """
    augment_rng = np.random.default_rng([seed, index])
    noise_rng = np.random.default_rng([seed + 1, index])
    audio = load_audio(clip.path)
    speech, found = clip_speech(audio, segmentation, noise_rng)
    row = features.extract_features(speech, features.SAMPLE_RATE, feature_set)
    copies = []
    for _ in range(augment_rounds):
        speech, _ = clip_speech(augment(audio, augment_rng), segmentation, noise_rng)
        copies.append(features.extract_features(speech, features.SAMPLE_RATE, feature_set))
    return row, copies, found


def _clip_rows_star(arguments):
    return _clip_rows(*arguments)


def corpus_features(folder: Path, cache_dir: Optional[Path] = None,
                    augment_rounds: int = DEFAULT_AUGMENT_ROUNDS,
                    feature_set: str = features.FEATURE_SET_LIBROSA,
                    seed: int = 0, log=print,
                    segmentation: str = SEGMENTATION_WHOLE, jobs: int = 1) -> CorpusFeatures:
    """Features of every labelled clip (and augmented copies), cached as a .npz.

    ``segmentation`` (:data:`SEGMENTATIONS`): features of the whole clip, or of the
    utterance the node's segmenter cuts from it (augmented copies: augmented first, then
    cut, as a microphone would hear them). The cache key covers the feature version,
    feature set, segmentation (with the node's segmenter values), labels.csv content,
    rounds and seed, so a stale cache is never reused. ``jobs`` > 1 computes clips in that
    many worker processes (the same values as one process, up to float rounding).
    """
    folder = Path(folder).resolve()
    clips = read_corpus(folder)
    if segmentation not in SEGMENTATIONS:
        raise ValueError(f'segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}')
    if jobs < 1:
        raise ValueError(f'jobs must be at least 1, got {jobs}')
    version = features.feature_version(feature_set)
    settings = segmenter_settings() if segmentation == SEGMENTATION_NODE else 'clip'
    parts = [version, feature_set, f'segmentation={segmentation};{settings}',
             f'rng={CLIP_RNG_SCHEME}', f'end={CLIP_END_SCHEME}', str(augment_rounds),
             str(seed),
             (folder / 'labels.csv').read_text()]
    key = hashlib.sha1('|'.join(parts).encode()).hexdigest()[:12]
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache = cache_dir / f'{folder.name}-{key}.npz'
    names = features.feature_names(feature_set)
    if cache.is_file():
        data = np.load(cache, allow_pickle=False)
        return CorpusFeatures(folder.name, data['features'], data['augmented'],
                              data['labels'], data['speakers'], data['paths'],
                              names, version, segmentation,
                              data['segment_counts'] if 'segment_counts' in data else None)
    start = time.perf_counter()
    tasks = [(clip, index, augment_rounds, feature_set, seed, segmentation)
             for index, clip in enumerate(clips)]

    def logged(computed):
        for done, result in enumerate(computed, 1):
            if done % 100 == 0:
                log(f'{folder.name}: {done}/{len(clips)} clips, '
                    f'{time.perf_counter() - start:.0f} s')
            yield result

    if jobs == 1:
        features.warm_up()
        results = list(logged(map(_clip_rows_star, tasks)))
    else:  # spawned workers: forking a process that has imported TensorFlow can hang
        import multiprocessing
        with multiprocessing.get_context('spawn').Pool(
                jobs, initializer=features.warm_up) as pool:
            results = list(logged(pool.imap(_clip_rows_star, tasks, chunksize=4)))
    rows = [row for row, _, _ in results]
    augmented = [[copies[r] for _, copies, _ in results] for r in range(augment_rounds)]
    counts = [found for _, _, found in results]
    result = CorpusFeatures(
        folder.name, np.stack(rows),
        np.stack([np.stack(r) for r in augmented]) if augment_rounds else
        np.zeros((0, len(clips), len(names)), np.float32),
        np.array([c.label for c in clips]), np.array([c.speaker for c in clips]),
        np.array([str(c.path.relative_to(folder)) for c in clips]), names, version,
        segmentation, np.array(counts) if segmentation != SEGMENTATION_WHOLE else None)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix('.tmp.npz')
    extra = {} if result.segment_counts is None else {'segment_counts': result.segment_counts}
    np.savez_compressed(tmp, features=result.features, augmented=result.augmented,
                        labels=result.labels, speakers=result.speakers, paths=result.paths,
                        **extra)
    tmp.replace(cache)
    log(f'{folder.name}: cached {len(clips)} clips x {1 + augment_rounds} '
        f'({segmentation}) in {time.perf_counter() - start:.0f} s -> {cache}')
    if result.segment_counts is not None:
        log(describe_segment_counts(result))
    return result


def describe_segment_counts(data: CorpusFeatures) -> str:
    """How many original clips gave 0, 1 or 2+ node utterances (whole clips: one each)."""
    if data.segment_counts is None:
        return f'{data.name}: whole clips, one row each'
    counts = np.asarray(data.segment_counts)
    return (f'{data.name}: node segmenter on {counts.size} clips: {np.sum(counts == 0)} gave '
            f'no utterance (whole clip kept), {np.sum(counts == 1)} one, {np.sum(counts >= 2)} '
            'two or more (the longest kept)')
