"""Where the repository and the shared data sets are, for the training and evaluation tools.

A module run from ``install/<package>/lib/...`` cannot find the repository from its own
path, so ``$MIKA_ROOT`` (set by scripts/env.sh) comes first; the path of this file is
right only in the source tree.
"""
from __future__ import annotations

import os
from pathlib import Path


def repository_root() -> Path:
    """``$MIKA_ROOT``, else the source tree holding this file."""
    if os.environ.get('MIKA_ROOT'):
        return Path(os.environ['MIKA_ROOT'])
    return Path(__file__).resolve().parents[3]


def shared_data_dir() -> Path:
    """``$MIKA_DATA``, else ``<repo>/../shared/data`` (FER-2013, RAVDESS, EmoDB)."""
    if os.environ.get('MIKA_DATA'):
        return Path(os.environ['MIKA_DATA'])
    return repository_root().parent / 'shared' / 'data'
