"""Guards against a corrupt numba cache of librosa's kernels (numba issue 10128).

The race itself (two processes compiling the same kernels at once) corrupted the cache in 2
of 4 tries here without the compile lock and in 0 of 8 with it, but a test cannot provoke
it reliably in reasonable time. These tests check the lock between processes, and the
setup step's repair with a child that crashes the way a corrupt cache makes it crash
(SIGSEGV while cache files exist) and a cache folder of their own (NUMBA_CACHE_DIR), so
the real cache is untouched.
"""
import subprocess
import sys

import pytest

from mika_voice import feature_cache

CRASH_WHILE_CACHED = (
    'import os, signal\n'
    'from mika_voice.feature_cache import librosa_cache_files\n'
    'if librosa_cache_files(): os.kill(os.getpid(), signal.SIGSEGV)\n'
    'print("0.5")\n')


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A numba cache folder holding index and code files for librosa and for another
    package, as numba lays them out under NUMBA_CACHE_DIR."""
    monkeypatch.setenv('NUMBA_CACHE_DIR', str(tmp_path))
    librosa_dir = tmp_path / 'venv' / 'site-packages' / 'librosa' / 'core'
    other_dir = tmp_path / 'venv' / 'site-packages' / 'other'
    for folder in (librosa_dir, other_dir):
        folder.mkdir(parents=True)
        (folder / 'pitch._parabolic-467.py311.nbi').write_bytes(b'index')
        (folder / 'pitch._parabolic-467.py311.1.nbc').write_bytes(b'code')
    return tmp_path


def test_compile_lock_admits_one_process_at_a_time(tmp_path):
    lock = tmp_path / 'compile.lock'
    child_code = ('from pathlib import Path\n'
                  'from mika_voice.feature_cache import compile_lock\n'
                  f'with compile_lock(Path({str(lock)!r})): print("got it")')
    with feature_cache.compile_lock(lock):
        child = subprocess.Popen([sys.executable, '-c', child_code], stdout=subprocess.PIPE,
                                 text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=3)
    assert child.communicate(timeout=60)[0] == 'got it\n'
    assert child.returncode == 0


def test_finds_librosa_files_under_numba_cache_dir_only(cache_dir):
    found = [path for path in feature_cache.librosa_cache_files()
             if str(path).startswith(str(cache_dir))]
    assert sorted(path.suffix for path in found) == ['.nbc', '.nbi']
    assert all('librosa' in path.parts for path in found)


def test_crashing_warm_up_clears_the_cache_and_compiles_again(cache_dir):
    outcome = feature_cache.prepare([sys.executable, '-c', CRASH_WHILE_CACHED])
    assert 'crashed (killed by SIGSEGV)' in outcome and '(0.5 s)' in outcome
    assert not list((cache_dir / 'venv' / 'site-packages' / 'librosa').glob('**/*.nb?'))
    assert len(list((cache_dir / 'venv' / 'site-packages' / 'other').glob('*.nb?'))) == 2


def test_a_healthy_cache_is_kept(cache_dir):
    outcome = feature_cache.prepare([sys.executable, '-c', 'print("0.1")'])
    assert outcome == 'librosa kernels ready (0.1 s)'
    assert len(list(cache_dir.glob('**/librosa/**/*.nb?'))) == 2


def test_a_crash_with_an_empty_cache_is_reported(cache_dir):
    always_crash = 'import os, signal; os.kill(os.getpid(), signal.SIGSEGV)'
    with pytest.raises(RuntimeError, match='SIGSEGV.*even with an empty numba cache'):
        feature_cache.prepare([sys.executable, '-c', always_crash])


def test_the_real_warm_up_runs_in_a_child():
    assert feature_cache.prepare().startswith('librosa kernels ready')


def test_compile_lock_goes_on_unlocked_where_it_cannot_make_its_file(tmp_path):
    with feature_cache.compile_lock(tmp_path / 'missing folder' / 'compile.lock'):
        entered = True
    assert entered
