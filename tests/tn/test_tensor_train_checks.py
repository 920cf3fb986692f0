import pytest
import torch

from entangle.errors import ShapeError
from entangle.tn.tensor_train import check_train_cores


def test_check_train_cores_accepts_chains_and_names_the_bad_core():
    good = [torch.zeros(1, 3, 2), torch.zeros(2, 3, 4), torch.zeros(4, 3, 1)]
    check_train_cores(good)
    check_train_cores(good, 3)
    with pytest.raises(ShapeError, match="core 1"):
        check_train_cores([good[0], torch.zeros(3, 3, 4), good[2]])
    with pytest.raises(ShapeError, match="core 2 must have shape \\(4, 3, D\\)"):
        check_train_cores(good[:2] + [torch.zeros(4, 5, 1)], 3)
    with pytest.raises(ShapeError, match="bond 1"):
        check_train_cores(good[:2])
