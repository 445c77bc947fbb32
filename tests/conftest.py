from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bccd_root():
    """The BCCD dataset in Pascal VOC layout, shared next to the checkout; skip when absent."""
    root = Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"
    if not (root / "Annotations").is_dir():
        pytest.skip(f"BCCD dataset not found at {root}")
    return root


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from a folder unrelated to the recipes, so that relative paths cannot resolve from cwd."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd
