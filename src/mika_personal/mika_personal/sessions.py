"""Recorded sessions on disk, and the only split the tools allow: by session.

One recording is one session directory::

    <root>/<session_id>/
        bag/          rosbag2 recording (MCAP): camera and/or microphone topics
        labels.csv    ``start,end,label`` intervals, seconds from the bag start
                      (the label-file format of ``mika_evaluation``)
        session.yaml  person, session id, source (live topics or media files), topics

Everything prepared from a session (face crops, utterance features) keeps its session id,
because neighbouring frames and utterances of one recording are near-copies of each other:
a split that puts one recording on both sides scores the model on what it trained on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
import yaml

BAG_DIR = 'bag'
LABELS_FILE = 'labels.csv'
SESSION_FILE = 'session.yaml'


class SessionError(ValueError):
    """A session directory that is incomplete or inconsistent."""


class LeakageError(ValueError):
    """A split that would put one recording on both sides."""


@dataclass
class SessionInfo:
    """What ``session.yaml`` holds."""

    session_id: str
    person: str
    source: str  # 'live' (recorded from topics) or 'media' (imported files)
    topics: Dict[str, str] = field(default_factory=dict)  # role -> topic name
    notes: str = ''
    partial: bool = False  # stopped early (Ctrl-C): what it holds is labelled correctly

    def write(self, directory: Path) -> Path:
        path = Path(directory) / SESSION_FILE
        path.write_text(yaml.safe_dump(self.__dict__, sort_keys=False))
        return path

    @classmethod
    def read(cls, directory: Path) -> 'SessionInfo':
        path = Path(directory) / SESSION_FILE
        try:
            document = yaml.safe_load(path.read_text()) or {}
            return cls(**document)
        except (OSError, yaml.YAMLError, TypeError) as error:
            raise SessionError(f'{path}: {error}') from None


def session_paths(directory: Path) -> Tuple[Path, Path]:
    """(bag directory, labels file) of a session; SessionError names what is missing."""
    directory = Path(directory)
    bag, labels = directory / BAG_DIR, directory / LABELS_FILE
    missing = [str(p) for p in (bag, labels, directory / SESSION_FILE) if not p.exists()]
    if missing:
        raise SessionError(f'session {directory} is incomplete: missing {", ".join(missing)}')
    return bag, labels


def find_sessions(roots: Iterable[Path]) -> List[Path]:
    """Session directories under each root (a root may itself be a session)."""
    found: List[Path] = []
    for root in map(Path, roots):
        if (root / SESSION_FILE).exists():
            found.append(root)
        else:
            found.extend(sorted(p.parent for p in root.glob(f'*/{SESSION_FILE}')))
    return found


def group_split(groups: Sequence[str], test_groups: Iterable[str]
                ) -> Tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test) where test rows are exactly those of ``test_groups``.

    Refuses (LeakageError) a test group with no rows and a split with no training rows,
    so that a typo in a session id cannot silently turn into a test set of nothing.
    """
    groups = np.asarray(groups, dtype=object)
    wanted = set(test_groups)
    unknown = wanted - set(groups.tolist())
    if unknown:
        raise LeakageError(f'test sessions {sorted(unknown)} have no samples; '
                           f'known sessions: {sorted(set(groups.tolist()))}')
    is_test = np.array([g in wanted for g in groups], dtype=bool)
    if is_test.all():
        raise LeakageError('every session is in the test set: nothing left to train on')
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def check_disjoint(train_groups: Iterable[str], test_groups: Iterable[str]) -> None:
    """LeakageError naming the recordings found on both sides of a split."""
    shared = sorted(set(train_groups) & set(test_groups))
    if shared:
        raise LeakageError(f'recordings on both sides of the split: {shared}; '
                           'split by session id only')
