"""Fine-tune a shipped model on one person's prepared sessions (``fine_tune``).

    fine_tune --modality voice --dataset ~/mika_personal_data/voice_dataset.npz \\
        --output ~/mika_models/alice_voice.keras --test-sessions alice-3 --report-dir ~/rep
    fine_tune --modality face --dataset ~/mika_personal_data/face_dataset.npz \\
        --output ~/mika_models/alice_face.keras --test-sessions alice-3 --report-dir ~/rep

Each modality has its own options and defaults (``fine_tune --modality voice --help``):
voice in :mod:`mika_personal.voice_tuning`, face in :mod:`mika_personal.face_tuning`.
Both split by session only, write a model file the node loads like any other, and compare
it with the generic model on the held-out sessions.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from mika_common.tensorflow_logging import quiet_tensorflow_start_up

MODALITIES = ('face', 'voice')


def _parser(modality: Optional[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='fine_tune' + (f' --modality {modality}' if modality else ''),
        description=__doc__.split('\n\n')[0],
        epilog=None if modality else 'options per modality: fine_tune --modality voice '
                                     '--help, fine_tune --modality face --help')
    parser.add_argument('--modality', choices=MODALITIES, required=True,
                        help='which model to fine-tune')
    return parser


def main_face(argv: List[str]) -> int:
    """The face branch: options and training in :mod:`mika_personal.face_tuning`."""
    from mika_personal.face_tuning import add_face_arguments, main_face as run_face
    return run_face(add_face_arguments(_parser('face')).parse_args(argv))


def main_voice(argv: List[str]) -> int:
    """The voice branch: options and training in :mod:`mika_personal.voice_tuning`."""
    from mika_personal.voice_tuning import add_voice_arguments, main_voice as run_voice
    return run_voice(add_voice_arguments(_parser('voice')).parse_args(argv))


def main(argv: Optional[Sequence[str]] = None) -> int:
    quiet_tensorflow_start_up()
    argv = list(sys.argv[1:] if argv is None else argv)
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument('--modality', choices=MODALITIES)
    known, _ = first.parse_known_args(argv)
    if known.modality is None:
        _parser(None).parse_args(argv)  # prints usage (or help) and exits
    return (main_voice if known.modality == 'voice' else main_face)(argv)


if __name__ == '__main__':
    sys.exit(main())
