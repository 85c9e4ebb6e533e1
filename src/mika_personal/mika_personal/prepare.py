"""Turn recorded sessions into one dataset file per modality (``prepare_sessions``).

    prepare_sessions ~/mika_sessions --output-dir ~/mika_personal_data \\
        [--params config/perception.yaml] [--modality face voice]

Faces: the face node's detector, tracker and the base model's preprocessing, near-
duplicate frames thinned (:mod:`mika_personal.face_data`) -> ``face_dataset.npz``.
Voices: the voice node's segmenter and features (:mod:`mika_personal.voice_data`) ->
``voice_dataset.npz``. Every sample keeps its session id and time; the files hold no
pickled objects (``numpy.load(..., allow_pickle=False)`` reads them).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from mika_common.tensorflow_logging import quiet_tensorflow_start_up
from mika_evaluation.bag_format import BagError
from mika_personal.sessions import SessionError, find_sessions

FACE_DATASET = 'face_dataset.npz'
VOICE_DATASET = 'voice_dataset.npz'
MODALITIES = ('face', 'voice')


def prepare_face_dataset(sessions: Sequence[Path], args) -> Path:
    from mika_personal.face_data import prepare_faces
    dataset = prepare_faces(sessions, args.face_model, args.params, args.camera_topic,
                            args.near_duplicate_mad)
    return _report(dataset.save(Path(args.output_dir) / FACE_DATASET), dataset, 'faces')


def prepare_voice_dataset(sessions: Sequence[Path], args) -> Path:
    from mika_personal.voice_data import prepare_voices
    dataset = prepare_voices(sessions, args.voice_model, args.params, args.augment_rounds)
    return _report(dataset.save(Path(args.output_dir) / VOICE_DATASET), dataset,
                   'utterances')


def _report(path: Path, dataset, what: str) -> Path:
    counts = ', '.join(f'{session} {sum(row.values())}'
                       for session, row in dataset.summary().items())
    print(f'{path}: {len(dataset)} {what} ({counts})')
    return path


def parse_args(argv: Optional[Sequence[str]] = None):
    from mika_perception.face_model import DEFAULT_MODEL_PATH
    from mika_personal.face_data import NEAR_DUPLICATE_MAD
    from mika_personal.voice_data import DEFAULT_AUGMENT_ROUNDS
    parser = argparse.ArgumentParser(prog='prepare_sessions',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('sessions', type=Path, nargs='+',
                        help='session folders, or folders of sessions')
    parser.add_argument('--output-dir', type=Path, required=True,
                        help=f'where {FACE_DATASET} and {VOICE_DATASET} are written')
    parser.add_argument('--modality', nargs='+', choices=MODALITIES, default=list(MODALITIES))
    parser.add_argument('--params', type=Path, default=None,
                        help="the launch params YAML (config/perception.yaml): prepare with "
                             "the nodes' own settings (default: their defaults)")
    parser.add_argument('--face-model', default=str(DEFAULT_MODEL_PATH),
                        help='the face model to fine-tune later: its preprocessing spec '
                             'is the one used (default: the shipped model)')
    parser.add_argument('--camera-topic', default=None,
                        help="camera topic in the bags (default: session.yaml's, else the "
                             "bag's only image topic)")
    parser.add_argument('--near-duplicate-mad', type=float, default=NEAR_DUPLICATE_MAD,
                        help='least difference from the last kept face for a frame to be '
                             f'kept (measured default {NEAR_DUPLICATE_MAD}; 0 keeps all)')
    parser.add_argument('--voice-model', default=None,
                        help='the voice model to fine-tune later: its feature set is the '
                             "one extracted (default: the voice node's model)")
    parser.add_argument('--augment-rounds', type=int, default=DEFAULT_AUGMENT_ROUNDS,
                        help='augmented copies of each utterance, used for training only')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    quiet_tensorflow_start_up()
    args = parse_args(argv)
    sessions = find_sessions(args.sessions)
    if not sessions:
        print(f'prepare_sessions: no session (a folder with session.yaml) in '
              f'{", ".join(map(str, args.sessions))}', file=sys.stderr)
        return 2
    print(f'{len(sessions)} session(s): {", ".join(p.name for p in sessions)}')
    preparers = {'face': prepare_face_dataset, 'voice': prepare_voice_dataset}
    failed = False
    for modality in args.modality:  # one modality failing still leaves the other's file
        try:
            preparers[modality](sessions, args)
        except (SessionError, BagError, ValueError, OSError, RuntimeError) as error:
            # RuntimeError: a model file that does not load, with the node's own message
            print(f'prepare_sessions: {modality}: {error}', file=sys.stderr)
            failed = True
    return 2 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
