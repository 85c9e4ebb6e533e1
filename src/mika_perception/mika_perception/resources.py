"""Where the package's model files are: installed share directory, else the source tree.

ROS-free (ament_index_python is plain Python); the node, the benchmark and the detector
factory resolve model names through here, so an installed workspace and a source checkout
behave the same.
"""
from __future__ import annotations

import os
from pathlib import Path

#: File name of the shipped face emotion model inside :func:`models_dir`.
FACE_MODEL_FILE = 'face_emotion.keras'
SOURCE_MODELS_DIR = Path(__file__).resolve().parents[1] / 'models'


def models_dir() -> Path:
    """share/mika_perception/models when the package is installed, else source models/."""
    try:
        from ament_index_python.packages import get_package_share_directory
        installed = Path(get_package_share_directory('mika_perception')) / 'models'
        if installed.is_dir():
            return installed
    except (ImportError, LookupError, ValueError):
        pass
    return SOURCE_MODELS_DIR


def resolve_model_path(path: str) -> str:
    """A relative model path is taken inside :func:`models_dir`."""
    return path if os.path.isabs(path) else str(models_dir() / path)
