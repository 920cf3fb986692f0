import math

import pytest
import torch

from entangle.errors import ShapeError
from entangle.tn import MPO, MPS


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_from_matrix_roundtrip_and_apply():
    w = torch.randn(12, 8, dtype=torch.float64, generator=gen())
    mpo, err = MPO.from_matrix(w, out_dims=[3, 4], in_dims=[2, 4])
    assert torch.allclose(mpo.to_matrix(), w) and err < 1e-12
    x = torch.randn(5, 8, dtype=torch.float64, generator=gen(1))
    assert torch.allclose(mpo.apply(x), x @ w.T)


def test_truncated_mpo_error_equals_discarded():
    w = torch.randn(16, 16, dtype=torch.float64, generator=gen(2))
    mpo, err = MPO.from_matrix(w, [2] * 4, [2] * 4, max_bond=3)
    assert max(mpo.bond_dims) <= 3
    assert torch.isclose(torch.linalg.norm(mpo.to_matrix() - w), err, rtol=1e-10)


def test_apply_matches_dense_for_random_mpo():
    mpo = MPO.random([2, 3, 2], [3, 2, 4], [3, 2], generator=gen(3))
    x = torch.randn(4, 24, dtype=torch.float64, generator=gen(4))
    assert torch.allclose(mpo.apply(x), x @ mpo.to_matrix().T)
    with pytest.raises(ShapeError):
        mpo.apply(torch.randn(4, 23, dtype=torch.float64))


def test_random_mpo_entry_std():
    mpo = MPO.random([4, 4, 4], [4, 4, 4], 8, std=0.1, generator=gen(5))
    std = float(mpo.to_matrix().std())
    assert 0.05 < std < 0.2


def test_identity_and_choi_vectorisation():
    ident = MPO.identity([2, 3])
    assert torch.allclose(ident.to_matrix(), torch.eye(6, dtype=torch.float64))
    mpo = MPO.random([2, 3], [3, 2], 2, generator=gen(6))
    mps = mpo.to_mps()
    assert isinstance(mps, MPS) and mps.dims == [6, 6]
    # Choi vector = operator tensor with (o_k, i_k) fused per site
    dense = mpo.to_dense().permute(0, 2, 1, 3).reshape(6, 6)
    assert torch.allclose(mps.to_dense(), dense)
    # operator entanglement across the cut equals Schmidt values of the reshaped operator
    s = torch.linalg.svdvals(dense)
    assert torch.allclose(mps.schmidt_values(0), s[: mps.bond_dims[0]])


def test_canonical_forms_preserve_operator():
    mpo = MPO.random([2, 2, 2, 2], [2, 2, 2, 2], 4, generator=gen(7))
    for center in range(4):
        c = mpo.canonicalize(center)
        assert torch.allclose(c.to_matrix(), mpo.to_matrix(), atol=1e-12)
    assert math.isclose(float(mpo.norm()), float(torch.linalg.norm(mpo.to_matrix())), rel_tol=1e-10)
