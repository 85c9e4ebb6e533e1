"""The tools find the repository and the data from an installed package as well."""
import importlib.util
from pathlib import Path

from mika_common import workspace

REPOSITORY = Path(__file__).resolve().parents[3]


def test_environment_comes_first(monkeypatch, tmp_path):
    """An installed copy lives under install/: only MIKA_ROOT can say where the repo is."""
    monkeypatch.setenv('MIKA_ROOT', str(tmp_path / 'repo'))
    monkeypatch.setenv('MIKA_DATA', str(tmp_path / 'data'))
    assert workspace.repository_root() == tmp_path / 'repo'
    assert workspace.shared_data_dir() == tmp_path / 'data'


def test_source_tree_without_environment(monkeypatch):
    monkeypatch.delenv('MIKA_ROOT', raising=False)
    monkeypatch.delenv('MIKA_DATA', raising=False)
    source = REPOSITORY / 'src' / 'mika_common' / 'mika_common' / 'workspace.py'
    spec = importlib.util.spec_from_file_location('workspace_in_source_tree', source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.repository_root() == REPOSITORY
    assert module.shared_data_dir() == REPOSITORY.parent / 'shared' / 'data'
