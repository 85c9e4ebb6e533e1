"""The near-duplicate threshold of mika_personal.face_data, re-measured on a small run of
the thinning study: neighbouring frames fall below it, different faces above it."""
import os
import pathlib

import numpy as np
import pytest

from mika_personal.face_data import NEAR_DUPLICATE_MAD

REPO = pathlib.Path(__file__).resolve().parents[1]
BASE_MODEL = str(REPO / 'src' / 'mika_perception' / 'models' / 'face_emotion.keras')


def test_measured_threshold_separates_neighbours_from_different_faces():
    data = pathlib.Path(os.environ.get('MIKA_DATA', REPO.parent / 'shared' / 'data'))
    fer_path = data / 'fer2013' / 'fer2013.npz'
    if not fer_path.is_file():
        pytest.skip(f'FER-2013 not found at {fer_path} (set MIKA_DATA to the shared data folder)')
    import thinning_study
    measured = thinning_study.measure(fer_path, BASE_MODEL, sessions=2,
                                      images_per_segment=2, pairs=400, log=lambda _: None)
    used = measured['thumbnail MAD']
    assert np.percentile(used['neighbours'], 95) < NEAR_DUPLICATE_MAD
    assert np.max(used['astronaut neighbours']) < NEAR_DUPLICATE_MAD
    assert min(used['different'].min(), used['different, same label'].min()) \
        > NEAR_DUPLICATE_MAD
    assert thinning_study.separation(used) > thinning_study.separation(measured['1 - SSIM'])
