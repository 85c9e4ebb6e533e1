"""The LiteRT export cache: served only for the same network, damaged entries are misses."""
import os
import zipfile

import numpy as np
import pytest

from mika_common import litert_cache
from mika_common.testing import with_metadata_entry

KEY = 'a' * 64


def _archive(path, **entries):
    with zipfile.ZipFile(path, 'w') as archive:
        for name, content in entries.items():
            archive.writestr(name.replace('_', '.'), content)
    return path


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv('MIKA_CACHE_DIR', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert litert_cache.cache_dir() == tmp_path / 'xdg' / 'mika' / 'litert'
    monkeypatch.setenv('MIKA_CACHE_DIR', str(tmp_path / 'own'))
    assert litert_cache.cache_dir() == tmp_path / 'own' / 'litert'


def test_network_key_ignores_the_metadata_entry_only(tmp_path):
    base = _archive(tmp_path / 'a.keras', config_json=b'{"layers": 1}', weights_h5=b'123')
    key = litert_cache.network_key(base)
    relabelled = with_metadata_entry(base, tmp_path / 'b.keras', b'{"labels": 2}')
    assert litert_cache.network_key(relabelled) == key
    other_weights = _archive(tmp_path / 'c.keras', config_json=b'{"layers": 1}',
                             weights_h5=b'124')
    assert litert_cache.network_key(other_weights) != key
    damaged = with_metadata_entry(base, tmp_path / 'd.keras', b'x' * 100,
                                  entry='weights.h5', corrupt_deflate=True)
    with pytest.raises(litert_cache.ARCHIVE_ERRORS):
        litert_cache.network_key(damaged)


def test_store_then_load_and_every_mismatch_is_a_miss_with_a_reason(tmp_path):
    assert litert_cache.load(KEY, tmp_path) == (None, None)
    assert litert_cache.store(KEY, b'flatbuffer', 1e-7, tmp_path) is None
    entry, problem = litert_cache.load(KEY, tmp_path)
    assert problem is None and (entry.flatbuffer, entry.parity_error) == (b'flatbuffer', 1e-7)

    other = 'b' * 64  # an entry renamed to another model's key
    os.replace(tmp_path / f'{KEY}.zip', tmp_path / f'{other}.zip')
    assert litert_cache.load(other, tmp_path)[1].endswith('belongs to another model file')

    litert_cache.store(KEY, b'flatbuffer', 1e-7, tmp_path)
    path = tmp_path / f'{KEY}.zip'
    with zipfile.ZipFile(path) as archive:
        record = archive.read('entry.json')
    _archive(path, entry_json=record, model_tflite=b'flatbuffeR')  # bytes changed
    assert 'does not match its own digest' in litert_cache.load(KEY, tmp_path)[1]

    for garbage in (b'', b'PK\x03\x04 cut short', os.urandom(300)):
        path.write_bytes(garbage)
        entry, problem = litert_cache.load(KEY, tmp_path)
        assert entry is None and 'damaged' in problem


def test_an_unwritable_cache_is_a_note_not_an_error(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_bytes(b'')
    note = litert_cache.store(KEY, b'flatbuffer', 0.0, blocker / 'litert')
    assert 'not cached' in note and 'MIKA_CACHE_DIR' in note


def test_old_entries_and_abandoned_partial_files_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setattr(litert_cache, 'MAX_ENTRIES', 2)
    for index, key in enumerate(('1' * 64, '2' * 64, '3' * 64)):
        litert_cache.store(key, b'x', 0.0, tmp_path)
        os.utime(tmp_path / f'{key}.zip', (index, index))
    stale, fresh = tmp_path / 'killed.part', tmp_path / 'writing.part'
    for path in (stale, fresh):
        path.write_bytes(b'x')
    os.utime(stale, (0, 0))
    litert_cache.store('4' * 64, b'x', 0.0, tmp_path)
    assert sorted(p.stem[0] for p in tmp_path.glob('*.zip')) == ['3', '4']
    assert not stale.exists() and fresh.exists()


def test_litert_runner_exports_once_then_serves_the_cache_without_keras(tmp_path):
    keras = pytest.importorskip('keras')
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    probe = np.random.default_rng(0).standard_normal((4, 5))
    loads = []

    def load_keras():
        loads.append(1)
        return model

    def predict(keras_model, batch):
        return keras_model.predict_on_batch(batch)

    first = litert_cache.litert_runner(KEY, load_keras, predict, probe, 1e-5,
                                       directory=tmp_path)
    assert first.runner is not None and not first.from_cache and first.notes == []
    assert first.parity_error <= 1e-5 and loads == [1]
    second = litert_cache.litert_runner(KEY, None, None, probe, 1e-5, directory=tmp_path)
    assert second.from_cache and second.keras_model is None
    np.testing.assert_array_equal(second.runner(probe.astype(np.float32)),
                                  first.runner(probe.astype(np.float32)))
    assert second.runner.input_shape[1:] == (5,) and second.runner.output_shape[1:] == (3,)

    strict = litert_cache.litert_runner(KEY, load_keras, predict, probe, -1.0,
                                        directory=tmp_path)
    assert strict.runner is None and strict.keras_model is model
    assert 'differs from Keras' in strict.notes[0]
