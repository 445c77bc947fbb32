from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bccd_root():
    """The BCCD dataset in Pascal VOC layout, shared next to the checkout; skip when absent."""
    root = Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"
    if not (root / "Annotations").is_dir():
        pytest.skip(f"BCCD dataset not found at {root}")
    return root
