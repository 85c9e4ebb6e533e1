"""Stationary noise against the voice pipeline: results per minute of noise alone, and the
share of RAVDESS clips over the same noise that still give a result.

    python -m mika_voice.noise_benchmark [--minutes 1] [--clips 60]

Runs the node's pipeline (default parameters, running windows included) on generated
noise (:func:`mika_voice.testing.stationary_noise`) with the noise gates on, and off as
before issue 14 (``noise_floor_margin_db`` and ``min_speech_modulation_db`` 0). Prints a
markdown report (mika_voice README, "Noise").
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional

import numpy as np

from mika_voice.testing import NOISE_KINDS, stationary_noise

#: Noise levels, dB RMS re full scale; 'full scale' peaks at digital full scale.
LEVELS = (-50.0, -40.0, -30.0, -20.0, -10.0, 'full scale')
#: Speech levels, dB RMS re full scale: quiet, typical (ITU-T P.56 -26 dBov), loud.
SPEECH_LEVELS = (-35.0, -26.0, -20.0)
SNRS = (20.0, 10.0, 5.0)
GATES_OFF = {'noise_floor_margin_db': 0.0, 'min_speech_modulation_db': 0.0}


def scaled(noise: np.ndarray, level) -> np.ndarray:
    if level == 'full scale':
        return noise / np.max(np.abs(noise)) * (32767.0 / 32768.0)
    return noise * 10.0 ** (level / 20.0)


def results_of(pipeline, audio: np.ndarray, rate: int) -> List:
    """The estimates the node would publish for ``audio``, fed in 100 ms chunks."""
    from mika_voice.benchmark import s16le
    from mika_voice.pipeline import UtteranceRejected
    estimates = []
    for start in range(0, audio.size, rate // 10):
        chunk = s16le(audio[start:start + rate // 10])
        for utterance in pipeline.accept_chunk(chunk, start / rate).utterances:
            try:
                estimates.append(pipeline.classify(utterance))
            except UtteranceRejected:
                pass
    return estimates


def make_pipeline(values, classifier):
    from mika_voice.audio_decoding import StreamFormat
    from mika_voice.voice_parameters import assemble_voice_pipeline
    pipeline, _ = assemble_voice_pipeline(values, classifier)
    pipeline.set_format(StreamFormat.from_fields(classifier.metadata.sample_rate, 1, 'S16LE'))
    return pipeline


def noise_rates(values, classifier, minutes: float, seed: int) -> Dict[str, Dict]:
    """Results per minute of each noise at each level (a fresh stream each)."""
    rate = classifier.metadata.sample_rate
    rng = np.random.default_rng(seed)
    table = {}
    for kind in NOISE_KINDS:
        noise = stationary_noise(kind, minutes * 60.0, rate, rng)
        table[kind] = {str(level): len(results_of(make_pipeline(values, classifier),
                                                  scaled(noise, level), rate)) / minutes
                       for level in LEVELS}
    return table


def speech_kept(values, classifier, clips, seed: int) -> Dict[str, Dict]:
    """Share of clips with a result overlapping their speech: each clip 2 s into its own
    noise, its speech (between its first and last loud frame) at a level rotating over
    SPEECH_LEVELS, the noise SNR dB below; 'clean' is the clip as recorded over a
    -60 dBFS floor."""
    from mika_voice.benchmark import speech_of
    rate = classifier.metadata.sample_rate
    rng = np.random.default_rng(seed)
    table: Dict[str, Dict] = {}
    for kind in ('clean',) + NOISE_KINDS:
        for snr in ((None,) if kind == 'clean' else SNRS):
            kept = 0
            for number, clip in enumerate(clips):
                speech_level = SPEECH_LEVELS[number % len(SPEECH_LEVELS)]
                noise = (rng.standard_normal(clip.size + 3 * rate) if kind == 'clean' else
                         stationary_noise(kind, clip.size / rate + 3, rate, rng))
                audio = scaled(noise.astype(np.float64),
                               -60.0 if snr is None else speech_level - snr)
                gain = 1.0
                if snr is not None:
                    speech_rms = np.sqrt(np.mean(np.square(speech_of(clip, rate),
                                                           dtype=np.float64)))
                    gain = 10.0 ** (speech_level / 20.0) / speech_rms
                onset = 2 * rate
                audio[onset:onset + clip.size] += gain * clip
                audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
                found = results_of(make_pipeline(values, classifier), audio, rate)
                kept += any(e.utterance.start_index < onset + clip.size
                            and e.utterance.end_index > onset for e in found)
            table.setdefault(kind, {})['-' if snr is None else f'{snr:g}'] = kept / len(clips)
    return table


def markdown(report: Dict) -> str:
    lines = [f"Noise alone, results per minute ({report['minutes']:g} min per cell; gates on, "
             '(off as before))', '',
             '| noise | ' + ' | '.join(f'{level:g} dBFS' if level != 'full scale' else level
                                       for level in LEVELS) + ' |',
             '|---' * (len(LEVELS) + 1) + '|']
    for kind in NOISE_KINDS:
        on, off = report['noise'][kind], report['noise_off'][kind]
        cells = [f'{on[str(level)]:g} ({off[str(level)]:g})' for level in LEVELS]
        lines.append(f'| {kind} | ' + ' | '.join(cells) + ' |')
    lines += ['', f"Speech over the noise: share of {report['clips']} RAVDESS clips with a "
              'result', '',
              '| noise | ' + ' | '.join(f'SNR {snr:g} dB' for snr in SNRS) + ' |',
              '|---' * (len(SNRS) + 1) + '|']
    for kind, row in report['speech'].items():
        cells = [f'{share:.2f}' for share in row.values()]
        lines.append(f'| {kind} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--minutes', type=float, default=1.0, help='noise per table cell')
    parser.add_argument('--clips', type=int, default=40, help='RAVDESS clips (every actor)')
    parser.add_argument('--model', default=None, help='voice model (.keras); default: the '
                        'installed/shipped one')
    args = parser.parse_args(argv)

    import csv

    import soundfile

    from mika_common.workspace import shared_data_dir
    from mika_voice import features
    from mika_voice.voice_model import load_voice_model
    from mika_voice.voice_parameters import PARAMETERS, default_model_path

    classifier = load_voice_model(args.model or default_model_path())
    features.warm_up()
    values = {spec.name: spec.default for spec in PARAMETERS}
    off = dict(values, **GATES_OFF)
    ravdess = shared_data_dir() / 'ravdess'
    with open(ravdess / 'labels.csv', newline='') as handle:
        rows = [row for row in csv.DictReader(handle) if row['label']]
    picked = rows[::max(1, len(rows) // args.clips)][:args.clips]
    clips = [soundfile.read(ravdess / row['path'], dtype='float32')[0] for row in picked]
    report = {'minutes': args.minutes, 'clips': len(clips),
              'noise': noise_rates(values, classifier, args.minutes, 0),
              'noise_off': noise_rates(off, classifier, args.minutes, 0),
              'speech': speech_kept(values, classifier, clips, 1)}
    print(markdown(report))
    return 0


if __name__ == '__main__':
    sys.exit(main())
