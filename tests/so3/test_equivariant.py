"""Tests of entangle.so3.equivariant: invariance of equivariant tensor trains and the block-wise
QR / SVD / merge / split algebra (Hodapp & Shapeev Secs. 3–4), checked against dense tensors."""

import math

import pytest
import torch

from entangle.errors import ShapeError
from entangle.so3 import random_rotation, real_spherical_harmonics
from entangle.so3.equivariant import (
    EquivariantTensor, Sectors, allowed, contract_chain, coupling, decay_channels, left_matrices,
    merge, orthogonalize_left, orthogonalize_right, outer, right_matrices, split, svd_bond,
)



@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def features(points: torch.Tensor, irreps: Sectors, seed: int) -> torch.Tensor:
    """Covariant vector sum_j Y_l(r_j) f_{l n}(|r_j|) of a cloud ``points: (batch, J, 3)``."""
    g = torch.Generator().manual_seed(seed)
    l_max = max(l for l, _, _ in irreps.blocks)
    y = real_spherical_harmonics(points, l_max)  # [batch, J, (l_max+1)^2]
    r = points.norm(dim=-1)  # [batch, J]
    parts = []
    for l, p, n in irreps.blocks:
        assert p == (-1) ** l
        freq = torch.rand(n, generator=g) * 3
        radial = torch.cos(freq * r[..., None])  # [batch, J, n]
        parts.append(torch.einsum("bjm,bjn->bmn", y[..., l * l:(l + 1) ** 2], radial).flatten(1))
    return torch.cat(parts, dim=1)


def random_train(d: int, phys: Sectors, bond: Sectors, seed: int) -> list[EquivariantTensor]:
    g = torch.Generator().manual_seed(seed)
    t = Sectors.trivial()
    legs = [(t if k == 0 else bond, phys, t if k == d - 1 else bond) for k in range(d)]
    return [EquivariantTensor.random(lg, generator=g) for lg in legs]


PHYS = Sectors.natural([3, 2, 2])
BOND = Sectors(((0, 1, 2), (1, -1, 2), (1, 1, 1), (2, 1, 2), (0, -1, 1)))


def cloud(seed: int, batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, 6, 3, generator=torch.Generator().manual_seed(seed))


def value(cores, points):
    v = features(points, PHYS, seed=0)
    return contract_chain(cores, [v] * len(cores))


@pytest.mark.parametrize("d", [2, 3, 4])
def test_train_is_o3_invariant(d):
    cores = random_train(d, PHYS, BOND, seed=d)
    points = cloud(1)
    ref = value(cores, points)
    rot = random_rotation(7)
    assert ref.abs().min() > 1e-6  # non-trivial
    assert torch.allclose(value(cores, points @ rot.T), ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(value(cores, -points), ref, rtol=1e-10, atol=1e-12)


def test_allowed_blocks_follow_triangle_and_parity():
    assert allowed((1, -1), (1, -1), (2, 1))
    assert not allowed((1, -1), (1, -1), (1, -1))  # odd sum with natural parities
    assert allowed((1, -1), (1, -1), (1, 1))  # pseudo-vector (cross product)
    assert not allowed((0, 1), (1, -1), (2, 1))
    w = coupling(1, 1, 0)
    assert torch.allclose(w[:, :, 0].abs(), torch.eye(3) / math.sqrt(3))


def test_decay_rule_eq45():
    assert decay_channels(7, 1, 1.0) == [7, 3]
    assert decay_channels(3, 4, 5.0) == [3, 3, 2, 2, 2]
    assert decay_channels(1, 3, 1.0) == [1, 1, 1, 1]


def test_outer_product_is_covariant():
    irr = Sectors.natural([2, 1, 1])
    pts = cloud(2, batch=3)
    u, v = features(pts, irr, 1), features(pts * 0.7, irr, 2)
    w, w_irr = outer(u, irr, v, irr, l_max=3)
    rot = random_rotation(3)
    u2, v2 = features(pts @ rot.T, irr, 1), features(pts @ rot.T * 0.7, irr, 2)
    w2, _ = outer(u2, irr, v2, irr, l_max=3)
    from entangle.so3 import wigner_D
    for l, p, n in w_irr.blocks:
        expect = torch.einsum("mk,bkn->bmn", wigner_D(l, rot), w_irr.block(w, (l, p)))
        assert torch.allclose(w_irr.block(w2, (l, p)), expect, atol=1e-10)
    # the l = 0 block of same-l pairs is the scaled dot product of eq. (23)
    scal = w_irr.block(w, (0, 1))[:, 0, :]  # channels: ((0,0) pairs 2x2), ((1,1) 1x1), ((2,2) 1x1)
    dot11 = (irr.block(u, (1, -1)) * irr.block(v, (1, -1))).sum(dim=(1, 2))
    assert torch.allclose(scal[:, 4].abs(), dot11.abs() / math.sqrt(3))


def dense_left_unitarity(t: EquivariantTensor) -> torch.Tensor:
    dense = t.to_dense()
    mat = dense.reshape(-1, dense.shape[-1])
    return mat.T @ mat


def test_qr_left_keeps_network_and_gives_left_unitary_core():
    cores = random_train(4, PHYS, BOND, seed=11)
    points = cloud(3)
    ref = value(cores, points)
    for k in range(3):
        cores[k], cores[k + 1] = orthogonalize_left(cores[k], cores[k + 1])
        eye = dense_left_unitarity(cores[k])
        assert torch.allclose(eye, torch.eye(eye.shape[0]), atol=1e-12)  # eq. (32)
    assert torch.allclose(value(cores, points), ref, rtol=1e-10)


def test_qr_right_keeps_network_and_gives_right_unitary_core():
    cores = random_train(4, PHYS, BOND, seed=12)
    points = cloud(4)
    ref = value(cores, points)
    for k in (3, 2, 1):
        cores[k - 1], cores[k] = orthogonalize_right(cores[k - 1], cores[k])
        dense = cores[k].to_dense()
        mat = dense.reshape(dense.shape[0], -1)
        assert torch.allclose(mat @ mat.T, torch.eye(mat.shape[0]), atol=1e-12)
    assert torch.allclose(value(cores, points), ref, rtol=1e-10)


def test_svd_bond_matches_dense_spectrum_and_keeps_value():
    cores = random_train(3, PHYS, BOND, seed=13)
    points = cloud(5)
    ref = value(cores, points)
    a, b, spectra = svd_bond(cores[1], cores[2])
    assert torch.allclose(value([cores[0], a, b], points), ref, rtol=1e-10)
    # singular values of the dense (left legs) x (right legs) matrix: each sector's values
    # appear 2l+1 times
    dense = torch.einsum("abx,xcd->abcd", cores[1].to_dense(), cores[2].to_dense())
    s_dense = torch.linalg.svdvals(dense.reshape(dense.shape[0] * dense.shape[1], -1))
    s_blocks = torch.cat([s.repeat(2 * sec[0] + 1) for sec, s in spectra.items()])
    s_blocks = torch.sort(s_blocks, descending=True).values
    assert torch.allclose(s_dense[:s_blocks.numel()], s_blocks, rtol=1e-9, atol=1e-12)
    assert s_dense[s_blocks.numel():].abs().max() < 1e-10
    # the new cores are balanced: A^T A = D = B B^T per sector
    ma, _ = left_matrices(a)
    mb, _ = right_matrices(b)
    for sec, s in spectra.items():
        assert torch.allclose(ma[sec].T @ ma[sec], torch.diag(s), atol=1e-10)
        assert torch.allclose(mb[sec] @ mb[sec].T, torch.diag(s), atol=1e-10)


def test_svd_truncation_reduces_rank():
    cores = random_train(3, PHYS, BOND, seed=14)
    _, b, spectra = svd_bond(cores[1], cores[2], max_rank=1)
    assert all(n == 1 for _, _, n in b.legs[0].blocks)
    assert all(s.numel() <= 1 for s in spectra.values())


def test_merge_split_roundtrip():
    cores = random_train(4, PHYS, BOND, seed=15)
    points = cloud(6)
    ref = value(cores, points)
    two = merge(cores[1], cores[2])
    dense = torch.einsum("abx,xcd->abcd", cores[1].to_dense(), cores[2].to_dense())
    assert torch.allclose(two.to_dense(), dense, atol=1e-12)
    a, b, _ = split(two, absorb="right")
    assert torch.allclose(value([cores[0], a, b, cores[3]], points), ref, rtol=1e-10)
    eye = dense_left_unitarity(a)
    assert torch.allclose(eye, torch.eye(eye.shape[0]), atol=1e-12)


def test_bad_blocks_are_rejected():
    legs = (Sectors.trivial(), PHYS, BOND)
    with pytest.raises(ShapeError):
        EquivariantTensor(legs, {((0, 1), (1, -1), (2, 1)): torch.zeros(1, 2, 2)})
    with pytest.raises(ShapeError):
        EquivariantTensor(legs, {((0, 1), (0, 1), (0, 1)): torch.zeros(1, 2, 2)})


def test_sectors_convert_to_so3_irreps_layout():
    from entangle.so3 import Irreps
    irreps = PHYS.to_irreps()
    assert irreps == Irreps("3x0e+2x1o+2x2e") and Sectors.from_irreps(irreps) == PHYS
    assert Sectors.from_irreps("1x1o+2x0e+1x1o") == Sectors(((1, -1, 2), (0, 1, 2)))
    # the same covariant vector in both layouts rotates with Irreps.D_from_matrix
    pts = cloud(8, batch=2)
    rot = random_rotation(9)
    x, x_rot = features(pts, PHYS, 0), features(pts @ rot.T, PHYS, 0)
    y, y_rot = PHYS.to_irreps_layout(x), PHYS.to_irreps_layout(x_rot)
    assert torch.allclose(y_rot, y @ irreps.D_from_matrix(rot).T, atol=1e-10)
    assert not torch.allclose(x_rot, x @ irreps.D_from_matrix(rot).T, atol=1e-6)
