"""Compile librosa's numba kernels once, in one process, before several processes use them.

librosa caches its numba kernels on disk. Two processes that compile the same gufunc at
the same moment (on a fresh install: the voice node and an evaluator, or two voice nodes)
can leave a wrapper and a kernel from different compilations in that cache (numba issue
10128), and from then on every process that computes voice features dies with a
segmentation fault. Two guards: :func:`mika_voice.features.warm_up`, which every process
calls before its first features, compiles under :func:`compile_lock`, so that processes of
one machine compile one after the other; and the setup step runs this module, which warms
the cache and, if the warm-up crashes, deletes librosa's cached kernels and compiles them
again.

    python -m mika_voice.feature_cache
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator, List, Sequence

WARM_UP = 'from mika_voice.features import warm_up; print(f"{warm_up():.1f}")'
#: One lock for the machine (per temp folder): the kernel cache is shared the same way.
COMPILE_LOCK = Path(tempfile.gettempdir()) / 'mika_voice_numba_compile.lock'


@contextmanager
def compile_lock(path: Path = COMPILE_LOCK) -> Iterator[None]:
    """Hold an exclusive lock while librosa's kernels compile or load; released when the
    holder exits or dies. Any user may take it (the file is made world-writable). Where the
    file cannot be opened (a read-only temp folder) it goes on unlocked: the setup step
    has compiled the kernels already."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        descriptor = None  # not yielded here: the body's errors would read as this one's
    if descriptor is None:
        yield
        return
    try:
        with suppress(PermissionError):  # another user's file: already world-writable
            os.fchmod(descriptor, 0o666)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def librosa_cache_files() -> List[Path]:
    """numba cache files (index .nbi, code .nbc) of librosa's kernels: beside librosa's
    sources, or under numba's cache folder (NUMBA_CACHE_DIR, or the per-user folder numba
    uses when site-packages is read-only)."""
    import librosa
    from numba.misc.appdirs import AppDirs
    roots = [Path(librosa.__file__).parent]
    cache_dir = os.environ.get('NUMBA_CACHE_DIR') or AppDirs(appname='numba').user_cache_dir
    roots += [path for path in Path(cache_dir).glob('**/librosa') if path.is_dir()]
    return sorted(path for root in roots for pattern in ('*.nbi', '*.nbc')
                  for path in root.glob(f'**/{pattern}'))


def warm_up_in_child(command: Sequence[str] = (sys.executable, '-c', WARM_UP)
                     ) -> subprocess.CompletedProcess:
    """The warm-up runs in a child: a corrupt cache kills the process that loads it."""
    return subprocess.run(list(command), capture_output=True, text=True, timeout=600)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f'killed by {signal.Signals(-returncode).name}'
    return f'exit status {returncode}'


def prepare(command: Sequence[str] = (sys.executable, '-c', WARM_UP)) -> str:
    """Warm the cache; on a crash, clear it and warm it once more. Returns what was done;
    raises RuntimeError when even a fresh compilation fails."""
    first = warm_up_in_child(command)
    if first.returncode == 0:
        return f'librosa kernels ready ({first.stdout.strip()} s)'
    stale = librosa_cache_files()
    for path in stale:
        path.unlink(missing_ok=True)
    second = warm_up_in_child(command)
    if second.returncode != 0:
        raise RuntimeError(f'computing voice features fails ({describe_exit(second.returncode)}) '
                           f'even with an empty numba cache:\n{second.stderr[-2000:]}')
    return (f'the voice-feature warm-up crashed ({describe_exit(first.returncode)}): deleted '
            f'{len(stale)} cached librosa kernels and compiled them again '
            f'({second.stdout.strip()} s)')


def main() -> int:
    try:
        print(prepare())
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
