import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ENTANGLE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """Path of ../shared/data (or $ENTANGLE_DATA); skips the test when it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"shared datasets not found at {DATA} (set $ENTANGLE_DATA)")
    return DATA
