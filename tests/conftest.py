import os

# many small BLAS calls on a shared 2-core machine: threads only add contention
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ENTANGLE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """Path of ../shared/data (or $ENTANGLE_DATA); skips the test when it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"shared datasets not found at {DATA} (set $ENTANGLE_DATA)")
    return DATA
