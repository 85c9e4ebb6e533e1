"""LiteRT (TFLite) exports of Keras model files, cached on disk so a node starts without
TensorFlow.

ROS-free. Importing Keras/TensorFlow and exporting the model to LiteRT took 5-9 s of every
face and voice node start (issue 14), so a node that launch respawned after a crash gave
no result for 10 s or more. An export is stored under :func:`cache_dir`, keyed by
:func:`network_key` of the model file, and served only when that key and the digest of
the stored flatbuffer both match; anything else is a miss the caller rebuilds (never an
error of its own). The key covers every archive entry Keras reads and none of our
``mika.json``: the metadata (label order, preprocessing, statistics) is read from the
model file at every start, so a file whose metadata alone changed reuses its export.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np

CACHE_FORMAT = 'mika-litert-cache/1'
#: What reading a damaged zip archive can raise: zlib.error for a corrupt deflate stream,
#: EOFError for one cut short, struct.error for a mangled header, NotImplementedError (a
#: RuntimeError) for an unknown compression method, RuntimeError for an encrypted entry.
ARCHIVE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError,
                  struct.error, ValueError)
#: Entries kept in the cache (newest by modification time); older ones are removed.
MAX_ENTRIES = 32
PARTIAL_TIMEOUT_S = 600.0
_ENTRY_JSON = 'entry.json'
_ENTRY_MODEL = 'model.tflite'


def cache_dir() -> Path:
    """``$MIKA_CACHE_DIR``, else ``$XDG_CACHE_HOME/mika``, else ``~/.cache/mika``; plus
    ``litert``."""
    root = os.environ.get('MIKA_CACHE_DIR')
    if not root:
        xdg = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'),
                                                               '.cache')
        root = os.path.join(xdg, 'mika')
    return Path(root) / 'litert'


def network_key(path, metadata_entry: str = 'mika.json') -> str:
    """SHA-256 over the names and contents of the archive's entries but ``metadata_entry``.

    Reads (and so CRC-checks) every entry: raises one of :data:`ARCHIVE_ERRORS` for a
    damaged archive.
    """
    digest = hashlib.sha256(CACHE_FORMAT.encode())
    with zipfile.ZipFile(path) as archive:
        for info in sorted(archive.infolist(), key=lambda entry: entry.filename):
            if info.filename == metadata_entry:
                continue
            digest.update(f'\0{info.filename}\0{info.file_size}\0'.encode())
            with archive.open(info) as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b''):
                    digest.update(chunk)
    return digest.hexdigest()


class LiteRTRunner:
    """One LiteRT interpreter over a flatbuffer; resized to each batch size it sees."""

    name = 'tflite'

    def __init__(self, flatbuffer: bytes, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.flatbuffer = flatbuffer
        self.interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads)
        inputs = self.interpreter.get_input_details()
        self.input_index = inputs[0]['index']
        self.input_shape = tuple(int(v) for v in inputs[0]['shape'])
        outputs = self.interpreter.get_output_details()
        self.output_index = outputs[0]['index']
        self.output_shape = tuple(int(v) for v in outputs[0]['shape'])
        self.batch_size = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] != self.batch_size:
            self.interpreter.resize_tensor_input(self.input_index, list(batch.shape))
            self.interpreter.allocate_tensors()
            self.batch_size = batch.shape[0]
        self.interpreter.set_tensor(self.input_index, np.ascontiguousarray(batch, np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index).copy()


def export_litert(model) -> bytes:
    """The Keras model as a LiteRT flatbuffer (needs TensorFlow)."""
    with tempfile.TemporaryDirectory() as directory:
        exported = os.path.join(directory, 'model.tflite')
        model.export(exported, format='litert', verbose=False)
        with open(exported, 'rb') as stream:
            return stream.read()


@dataclass
class CachedExport:
    flatbuffer: bytes
    parity_error: float


def load(key: str, directory: Optional[Path] = None
         ) -> Tuple[Optional[CachedExport], Optional[str]]:
    """``(entry, None)`` on a hit, ``(None, None)`` when there is none, ``(None, reason)``
    when the entry is damaged or belongs to another model."""
    path = (directory or cache_dir()) / f'{key}.zip'
    if not path.is_file():
        return None, None
    try:
        with zipfile.ZipFile(path) as archive:
            record = json.loads(archive.read(_ENTRY_JSON))
            flatbuffer = archive.read(_ENTRY_MODEL)
        if not isinstance(record, dict) or record.get('format') != CACHE_FORMAT:
            return None, f'cached LiteRT model {path} has an unknown format'
        if record.get('key') != key:
            return None, f'cached LiteRT model {path} belongs to another model file'
        if record.get('tflite_sha256') != hashlib.sha256(flatbuffer).hexdigest():
            return None, f'cached LiteRT model {path} does not match its own digest'
        parity_error = float(record['parity_error'])
    except (*ARCHIVE_ERRORS, KeyError, TypeError) as error:
        return None, f'cached LiteRT model {path} is damaged ({type(error).__name__}: {error})'
    try:
        os.utime(path)  # recently used: kept by the pruning in store()
    except OSError:
        pass  # a read-only cache still serves
    return CachedExport(flatbuffer, parity_error), None


def store(key: str, flatbuffer: bytes, parity_error: float,
          directory: Optional[Path] = None) -> Optional[str]:
    """Write the entry atomically (a concurrent reader sees the old file or the new one);
    a note when it could not be written (a read-only home: every start exports again)."""
    directory = directory or cache_dir()
    record = {'format': CACHE_FORMAT, 'key': key, 'parity_error': float(parity_error),
              'tflite_sha256': hashlib.sha256(flatbuffer).hexdigest()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as archive:  # stored, not deflated: read in ms
        archive.writestr(_ENTRY_JSON, json.dumps(record, indent=1))
        archive.writestr(_ENTRY_MODEL, flatbuffer)
    temporary = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, suffix='.part', delete=False) as tmp:
            temporary = tmp.name
            tmp.write(buffer.getvalue())
        os.replace(temporary, directory / f'{key}.zip')
        temporary = None
        _prune(directory)
    except OSError as error:
        return (f'LiteRT export not cached in {directory} ({error}); the next start exports '
                'again (set MIKA_CACHE_DIR to a writable folder)')
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
    return None


def _prune(directory: Path) -> None:
    """Keeps the newest :data:`MAX_ENTRIES` entries, and removes partial files older than
    :data:`PARTIAL_TIMEOUT_S` (a writer killed mid-write leaves one)."""
    now = time.time()
    entries = []
    for path in directory.iterdir():
        try:
            modified = path.stat().st_mtime
        except OSError:  # removed by another process meanwhile
            continue
        if path.suffix == '.zip':
            entries.append((modified, path))
        elif path.suffix == '.part' and now - modified > PARTIAL_TIMEOUT_S:
            path.unlink(missing_ok=True)
    for _, stale in sorted(entries, reverse=True)[MAX_ENTRIES:]:
        stale.unlink(missing_ok=True)


@dataclass
class LiteRTChoice:
    """What :func:`litert_runner` found: ``runner`` None where LiteRT cannot serve (the
    notes say why); ``keras_model`` None when the export came from the cache."""
    runner: Optional[LiteRTRunner]
    keras_model: object = None
    parity_error: Optional[float] = None
    from_cache: bool = False
    notes: List[str] = field(default_factory=list)


def litert_runner(key: str, load_keras: Callable[[], object],
                  predict_keras: Callable[[object, np.ndarray], np.ndarray],
                  probe: np.ndarray, tolerance: float, num_threads: int = 1,
                  directory: Optional[Path] = None) -> LiteRTChoice:
    """The model of ``key`` in LiteRT: from the cache without Keras, else exported from
    ``load_keras()`` and served (and cached) only if its outputs on ``probe`` equal
    ``predict_keras``'s within ``tolerance``. ``load_keras``'s errors propagate."""
    choice = LiteRTChoice(None)
    cached, problem = load(key, directory)
    if problem:
        choice.notes.append(problem + '; exporting it again')
    if cached is not None and cached.parity_error <= tolerance:
        try:
            choice.runner = LiteRTRunner(cached.flatbuffer, num_threads)
        except Exception as error:  # e.g. an older LiteRT that lacks an op
            choice.notes.append(f'cached LiteRT model did not load ({error}); exporting again')
        else:
            choice.parity_error, choice.from_cache = cached.parity_error, True
            return choice
    choice.keras_model = load_keras()
    try:
        flatbuffer = export_litert(choice.keras_model)
        runner = LiteRTRunner(flatbuffer, num_threads)
    except Exception as error:  # export needs TensorFlow; JAX-only machines lack it
        choice.notes.append(f'LiteRT export failed ({error})')
        return choice
    probe = np.asarray(probe, np.float32)
    difference = float(np.max(np.abs(runner(probe) - predict_keras(choice.keras_model, probe))))
    choice.parity_error = difference
    if not difference <= tolerance:  # NaN fails too
        choice.notes.append(f'LiteRT differs from Keras by {difference:.2e} > {tolerance:.1e}')
        return choice
    choice.runner = runner
    note = store(key, flatbuffer, difference, directory)
    if note:
        choice.notes.append(note)
    return choice
