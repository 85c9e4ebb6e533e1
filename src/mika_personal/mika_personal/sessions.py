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
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Sequence, Tuple, TypeVar

import numpy as np
import yaml

Prepared = TypeVar('Prepared')

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


def extract_sessions(session_dirs: Iterable[Path], extract: Callable[[Path], Prepared],
                     missing: type, log=print) -> Iterator[Prepared]:
    """``extract(session_dir)`` of each session, in order. A session without the modality
    (``extract`` raises ``missing``) is skipped with a log line; a session id seen twice is
    refused (one recording on both sides of a split)."""
    seen = set()
    for session_dir in session_dirs:
        try:
            found = extract(session_dir)
        except missing as error:
            log(f'{Path(session_dir).name}: skipped, {error}')
            continue
        if found.session_id in seen:
            raise SessionError(f'session id {found.session_id!r} appears twice '
                               f'({session_dir}): session ids must be unique')
        seen.add(found.session_id)
        yield found


def bag_messages(bag: Path, pick: Callable[[object], List], what: str
                 ) -> Iterator[Tuple[float, object, object]]:
    """(seconds from the bag start, connection, message) of the connections that
    ``pick(reader)`` chooses, in bag order. A bag damaged mid-file raises
    :class:`mika_evaluation.bag_format.BagError` saying how many ``what`` were read."""
    from mika_evaluation.bag_format import BagError, make_typestore
    from mika_evaluation.offline import open_bag
    typestore = make_typestore()
    reader = open_bag(bag)
    try:
        connections = pick(reader)
        start = reader.start_time * 1e-9
        read = 0
        try:
            for connection, timestamp, raw in reader.messages(connections=connections):
                read += 1
                yield (timestamp * 1e-9 - start, connection,
                       typestore.deserialize_cdr(raw, connection.msgtype))
        except Exception as error:  # a damaged chunk mid-file
            raise BagError(f'bag {bag} could not be read to the end ({type(error).__name__}: '
                           f'{error}) after {read} {what}: damaged or truncated') from None
    finally:
        reader.close()


def counts_per_session(session_ids: Iterable[str], labels: Iterable[str]
                       ) -> Dict[str, Dict[str, int]]:
    """{session: {label: samples}} of a prepared dataset."""
    table: Dict[str, Dict[str, int]] = {}
    for session, label in zip(session_ids, labels):
        row = table.setdefault(str(session), {})
        row[str(label)] = row.get(str(label), 0) + 1
    return table



def save_prepared(path: Path, file_format: str, **arrays: np.ndarray) -> Path:
    """A dataset prepared from sessions as a plain ``.npz`` (no pickled objects), tagged
    with its ``file_format`` so that :func:`load_prepared` refuses any other file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, format=np.array(file_format), **arrays)
    return path


def load_prepared(path: Path, file_format: str, build: Callable[[Mapping], Prepared],
                  what: str, made_by: str) -> Prepared:
    """``build(arrays)`` of a file of :func:`save_prepared`; ValueError naming the file,
    what it should be and the command ``made_by`` that makes it, when it is missing, of
    another format, or holds what ``build`` refuses."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data['format']) != file_format:
                raise ValueError(f'format {str(data["format"])!r}, expected {file_format!r}')
            return build(data)
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f'{what} {path}: {error} (make it with {made_by})') from None
