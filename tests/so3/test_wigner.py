"""Tests of entangle.so3.wigner: exact 3j values (sympy), Hodapp–Shapeev App. B properties,
invariance under the real Wigner D matrices, and the D matrices themselves."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import sph_harm_y
from sympy.physics.wigner import clebsch_gordan as sympy_cg
from sympy.physics.wigner import wigner_3j as sympy_3j

from entangle.errors import ConfigError, DataError, ShapeError
from entangle.so3 import (
    complex_to_real,
    random_rotation,
    real_clebsch_gordan,
    real_spherical_harmonics,
    real_wigner_3j,
    solid_harmonics,
    wigner_3j,
    wigner_D,
)

F64 = torch.float64


def _triples(l_max: int):
    for l1, l2, l3 in itertools.product(range(l_max + 1), repeat=3):
        if abs(l1 - l2) <= l3 <= l1 + l2:
            yield l1, l2, l3


def _fitted_u(l: int) -> np.ndarray:
    """U with Y_real = U Y_complex, fitted to scipy's complex harmonics (independent of U_l)."""
    v = np.random.default_rng(l).normal(size=(8 * l + 8, 3))
    theta = np.arctan2(np.hypot(v[:, 0], v[:, 1]), v[:, 2])
    phi = np.arctan2(v[:, 1], v[:, 0])
    yc = np.stack([sph_harm_y(l, m, theta, phi) for m in range(-l, l + 1)], -1)  # [n, 2l+1]
    yr = real_spherical_harmonics(torch.tensor(v), l).numpy()[:, l * l:]  # [n, 2l+1]
    u_t, *_ = np.linalg.lstsq(yc, yr.astype(complex), rcond=None)  # yr = yc @ U^T
    return u_t.T


# ----------------------------------------------------------------------------- complex 3j
@pytest.mark.parametrize("l1,l2,l3", list(_triples(3)) + [(4, 6, 5), (10, 10, 10), (10, 3, 8)])
def test_wigner_3j_matches_sympy(l1, l2, l3):
    w = wigner_3j(l1, l2, l3)
    assert w.shape == (2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1)
    ms = [(m1, m2) for m1 in range(-l1, l1 + 1) for m2 in range(-l2, l2 + 1)
          if abs(m1 + m2) <= l3]
    if l1 + l2 + l3 > 20:  # large symbols: a deterministic sample of entries
        ms = ms[:: max(1, len(ms) // 25)]
    for m1, m2 in ms:
        ref = float(sympy_3j(l1, l2, l3, m1, m2, -m1 - m2))
        assert w[m1 + l1, m2 + l2, -m1 - m2 + l3].item() == pytest.approx(ref, abs=1e-15)


def test_wigner_3j_selection_rules():
    w = wigner_3j(3, 2, 4)
    m1, m2, m3 = np.meshgrid(np.arange(-3, 4), np.arange(-2, 3), np.arange(-4, 5), indexing="ij")
    assert torch.all(w[torch.tensor(m1 + m2 + m3 != 0)] == 0)
    assert torch.count_nonzero(w) > 0
    assert torch.all(wigner_3j(1, 1, 3) == 0) and wigner_3j(1, 1, 3).shape == (3, 3, 7)


@pytest.mark.parametrize("l1,l2", [(1, 1), (2, 3), (4, 4), (5, 2)])
def test_wigner_3j_orthogonality(l1, l2):
    """Eq. (B21) and its partner Σ_{l m} (2l+1) (..m1 m2 m)(..m1' m2' m) = δ δ."""
    blocks = {l: wigner_3j(l1, l2, l) for l in range(abs(l1 - l2), l1 + l2 + 1)}
    for l, wl in blocks.items():
        for lp, wlp in blocks.items():
            gram = (2 * l + 1) * torch.einsum("abm,abn->mn", wl, wlp)
            expected = torch.eye(2 * l + 1, dtype=F64) if l == lp else torch.zeros_like(gram)
            torch.testing.assert_close(gram, expected, atol=1e-14, rtol=0)
    complete = sum((2 * l + 1) * torch.einsum("abm,cdm->abcd", w, w) for l, w in blocks.items())
    n = (2 * l1 + 1) * (2 * l2 + 1)
    torch.testing.assert_close(complete.reshape(n, n), torch.eye(n, dtype=F64), atol=1e-14, rtol=0)


# ----------------------------------------------------------------------------- real 3j
@pytest.mark.parametrize("l", range(7))
def test_complex_to_real_matches_fitted_basis_change(l):
    np.testing.assert_allclose(complex_to_real(l).numpy(), _fitted_u(l), atol=1e-12)
    u = complex_to_real(l)
    torch.testing.assert_close(u @ u.conj().T, torch.eye(2 * l + 1, dtype=torch.complex128))


@pytest.mark.parametrize("l1,l2,l3", list(_triples(3)) + [(3, 4, 5), (5, 5, 4)])
def test_real_3j_is_eq10_real_or_imaginary(l1, l2, l3):
    """Eq. (10) evaluated with sympy's 3j and a basis change fitted to scipy's harmonics."""
    w = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
    for m1, m2 in itertools.product(range(-l1, l1 + 1), range(-l2, l2 + 1)):
        if abs(m1 + m2) <= l3:
            w[m1 + l1, m2 + l2, -m1 - m2 + l3] = float(sympy_3j(l1, l2, l3, m1, m2, -m1 - m2))
    u1, u2, u3 = (_fitted_u(l).conj() for l in (l1, l2, l3))
    c = np.einsum("abc,ia,jb,kc->ijk", w, u1, u2, u3)
    ours = real_wigner_3j(l1, l2, l3).numpy()
    if (l1 + l2 + l3) % 2 == 0:
        np.testing.assert_allclose(c, ours, atol=1e-12)
    else:
        np.testing.assert_allclose(c, 1j * ours, atol=1e-12)


def test_real_3j_111_is_levi_civita():
    r = real_wigner_3j(1, 1, 1)
    to_xyz = [2, 0, 1]  # harmonic order (y, z, x) -> Cartesian (x, y, z)
    eps = torch.zeros(3, 3, 3, dtype=F64)
    for (i, j, k), s in {(0, 1, 2): 1, (1, 2, 0): 1, (2, 0, 1): 1,
                         (0, 2, 1): -1, (2, 1, 0): -1, (1, 0, 2): -1}.items():
        eps[i, j, k] = s
    torch.testing.assert_close(r[to_xyz][:, to_xyz][:, :, to_xyz], eps / math.sqrt(6))
    # as a coupling it is the cross product
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(2, 3, generator=g, dtype=F64)
    coupled = torch.einsum("ijk,i,j->k", r, solid_harmonics(a, 1)[1:], solid_harmonics(b, 1)[1:])
    cross = solid_harmonics(torch.cross(a, b, dim=0), 1)[1:]
    expected = math.sqrt(3 / (4 * math.pi)) / math.sqrt(6) * cross
    torch.testing.assert_close(coupled, expected)


@pytest.mark.parametrize("l1,l2,l3", list(_triples(4)) + [(10, 10, 10), (10, 9, 3), (7, 5, 4),
                                                          (8, 8, 1)])
def test_real_3j_invariance(l1, l2, l3):
    """Σ C[m1 m2 m3] D1 D2 D3 = C for rotations; pseudo-tensor sign for improper ones."""
    c = real_wigner_3j(l1, l2, l3)
    rot = random_rotation(torch.Generator().manual_seed(l1 * 100 + l2 * 10 + l3), shape=(2,))
    for r, sign in ((rot[0], 1), (-rot[1], (-1) ** (l1 + l2 + l3))):
        d1, d2, d3 = (wigner_D(l, r) for l in (l1, l2, l3))
        turned = torch.einsum("abc,ai,bj,ck->ijk", c, d1, d2, d3)
        torch.testing.assert_close(turned, sign * c, atol=1e-13, rtol=0)


@pytest.mark.parametrize("l1,l2,l3", list(_triples(4)))
def test_real_3j_selection_rules_and_symmetries(l1, l2, l3):
    """[SR3], [SR4] (Eqs. (13)-(14)), the permutation symmetries (B17)-(B18), and (B19).

    (B19) as printed needs an odd number of non-zero m: only then does negating all m flip the
    sign product of [SR3] (with sgn(0) = +1, Eq. (B6)).
    """
    c = real_wigner_3j(l1, l2, l3)
    parity = (-1) ** (l1 + l2 + l3)
    sgn = lambda m: 1 if m >= 0 else -1  # noqa: E731  (Eq. (B6))
    for i, j, k in zip(*torch.nonzero(c, as_tuple=True)):
        m1, m2, m3 = int(i) - l1, int(j) - l2, int(k) - l3
        assert sgn(m1) * sgn(m2) * sgn(m3) == parity
        assert 0 in (m1 + m2 + m3, m1 + m2 - m3, m1 - m2 + m3, -m1 + m2 + m3)
        if sum(m != 0 for m in (m1, m2, m3)) % 2 == 1:  # (B19): negating flips [SR3]
            assert c[-m1 + l1, -m2 + l2, -m3 + l3] == 0
    torch.testing.assert_close(real_wigner_3j(l3, l1, l2), c.permute(2, 0, 1))
    torch.testing.assert_close(real_wigner_3j(l2, l1, l3), parity * c.permute(1, 0, 2))
    torch.testing.assert_close(real_wigner_3j(l1, l3, l2), parity * c.permute(0, 2, 1))


@pytest.mark.parametrize("l1,l2", [(1, 1), (2, 3), (4, 4), (6, 5)])
def test_real_3j_orthogonality(l1, l2):
    """Eqs. (B22)/(B23)."""
    blocks = {l: real_wigner_3j(l1, l2, l) for l in range(abs(l1 - l2), l1 + l2 + 1)}
    for l, cl in blocks.items():
        for lp, clp in blocks.items():
            gram = (2 * l + 1) * torch.einsum("abm,abn->mn", cl, clp)
            expected = torch.eye(2 * l + 1, dtype=F64) if l == lp else torch.zeros_like(gram)
            torch.testing.assert_close(gram, expected, atol=1e-14, rtol=0)


# ----------------------------------------------------------------------------- real CG
@pytest.mark.parametrize("l1,l2,l3", [t for t in _triples(4) if sum(t) % 2 == 0])
def test_real_cg_couples_products_of_harmonics(l1, l2, l3):
    """Σ CG Y_l1(r) Y_l2(r) = sqrt((2l1+1)(2l2+1) / 4π(2l3+1)) <l1 0 l2 0|l3 0> Y_l3(r)."""
    v = torch.randn(20, 3, generator=torch.Generator().manual_seed(9), dtype=F64)
    y = real_spherical_harmonics(v, 4)
    blk = lambda l: y[:, l * l:(l + 1) ** 2]  # noqa: E731
    coupled = torch.einsum("abc,na,nb->nc", real_clebsch_gordan(l1, l2, l3), blk(l1), blk(l2))
    factor = math.sqrt((2 * l1 + 1) * (2 * l2 + 1) / (4 * math.pi * (2 * l3 + 1))) \
        * float(sympy_cg(l1, l2, l3, 0, 0, 0))
    torch.testing.assert_close(coupled, factor * blk(l3), atol=1e-13, rtol=0)


@pytest.mark.parametrize("l1,l2,l3", [(1, 1, 2), (2, 2, 2), (3, 1, 3), (2, 1, 2), (4, 3, 2)])
def test_real_cg_equivariant_and_orthonormal(l1, l2, l3):
    cg = real_clebsch_gordan(l1, l2, l3)
    torch.testing.assert_close(torch.einsum("abk,abn->kn", cg, cg),
                               torch.eye(2 * l3 + 1, dtype=F64), atol=1e-14, rtol=0)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(2 * l1 + 1, generator=g, dtype=F64), torch.randn(2 * l2 + 1, generator=g,
                                                                           dtype=F64)
    r = random_rotation(g)
    z = torch.einsum("abc,a,b->c", cg, x, y)
    z_rot = torch.einsum("abc,a,b->c", cg, wigner_D(l1, r) @ x, wigner_D(l2, r) @ y)
    torch.testing.assert_close(z_rot, wigner_D(l3, r) @ z)


def test_real_cg_even_is_transformed_complex_cg():
    """For even l-sums CG is sympy's <l1 m1 l2 m2|l3 m3> with all three legs made real."""
    l1, l2, l3 = 2, 1, 3
    cg = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
    for m1, m2 in itertools.product(range(-l1, l1 + 1), range(-l2, l2 + 1)):
        if abs(m1 + m2) <= l3:
            cg[m1 + l1, m2 + l2, m1 + m2 + l3] = float(sympy_cg(l1, l2, l3, m1, m2, m1 + m2))
    u1, u2, u3 = (_fitted_u(l) for l in (l1, l2, l3))
    real = np.einsum("abc,ia,jb,kc->ijk", cg, u1.conj(), u2.conj(), u3)
    np.testing.assert_allclose(real, real_clebsch_gordan(l1, l2, l3).numpy(), atol=1e-12)


def test_cached_tables_are_copies_in_requested_dtype():
    a = real_wigner_3j(2, 2, 2)
    a.zero_()
    assert real_wigner_3j(2, 2, 2).abs().sum() > 0
    b = wigner_3j(2, 1, 1, dtype=torch.float32)
    assert b.dtype == torch.float32 and b.device.type == "cpu"
    assert real_clebsch_gordan(1, 1, 2, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ConfigError):
        wigner_3j(-1, 1, 1)
    with pytest.raises(ConfigError):
        real_wigner_3j(1, 1.5, 1)


# ----------------------------------------------------------------------------- D matrices
def test_wigner_D_rotates_harmonics():
    l_max = 10
    g = torch.Generator().manual_seed(7)
    rot = random_rotation(g, shape=(4,))
    rot = torch.cat([rot, -rot[:1], rot[1:2] @ torch.diag(torch.tensor([1.0, -1.0, 1.0],
                                                                          dtype=F64))])
    v = torch.randn(30, 3, generator=g, dtype=F64)
    y = real_spherical_harmonics(v, l_max)  # [30, 121]
    y_rot = real_spherical_harmonics(torch.einsum("rij,nj->rni", rot, v), l_max)  # [6, 30, 121]
    for l in range(l_max + 1):
        d = wigner_D(l, rot)  # [6, 2l+1, 2l+1]
        blk = slice(l * l, (l + 1) ** 2)
        torch.testing.assert_close(y_rot[..., blk], torch.einsum("rmn,kn->rkm", d, y[:, blk]),
                                   atol=1e-12, rtol=0)
        torch.testing.assert_close(d @ d.transpose(-1, -2),
                                   torch.eye(2 * l + 1, dtype=F64).expand_as(d), atol=1e-12,
                                   rtol=0)


def test_wigner_D_group_properties():
    g = torch.Generator().manual_seed(11)
    r1, r2 = random_rotation(g, shape=(2,))
    eye = torch.eye(3, dtype=F64)
    for l in range(7):
        torch.testing.assert_close(wigner_D(l, r1 @ r2), wigner_D(l, r1) @ wigner_D(l, r2))
        torch.testing.assert_close(wigner_D(l, eye), torch.eye(2 * l + 1, dtype=F64))
        torch.testing.assert_close(wigner_D(l, -eye), (-1) ** l * torch.eye(2 * l + 1, dtype=F64))
        torch.testing.assert_close(wigner_D(l, r1.T), wigner_D(l, r1).T)
    # l = 1 is R itself in the (y, z, x) order
    perm = [1, 2, 0]
    torch.testing.assert_close(wigner_D(1, r1), r1[perm][:, perm])


def test_wigner_D_float32_and_gradient():
    r = random_rotation(3, dtype=torch.float32)
    d = wigner_D(4, r)
    assert d.dtype == torch.float32
    torch.testing.assert_close(d.double(), wigner_D(4, r.double()), atol=1e-5, rtol=0)
    r64 = random_rotation(3).requires_grad_()
    assert torch.autograd.gradcheck(lambda m: wigner_D(2, m), (r64,))


def test_random_rotation_is_haar():
    rot = random_rotation(torch.Generator().manual_seed(0), shape=(20000,))
    torch.testing.assert_close(rot.transpose(-1, -2) @ rot, torch.eye(3, dtype=F64).expand_as(rot))
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(20000, dtype=F64))
    # character orthogonality of the Haar measure: E[tr R] = 0, E[(tr R)^2] = 1
    trace = rot.diagonal(dim1=-2, dim2=-1).sum(-1)
    assert abs(trace.mean().item()) < 0.03
    assert abs(trace.square().mean().item() - 1) < 0.05
    assert abs(rot.mean(0)).max() < 0.03
    same_seed = random_rotation(torch.Generator().manual_seed(5))
    torch.testing.assert_close(random_rotation(5), same_seed)


def test_bad_rotations():
    with pytest.raises(ShapeError):
        wigner_D(2, torch.eye(2, dtype=F64))
    with pytest.raises(DataError):
        wigner_D(2, 2 * torch.eye(3, dtype=F64))
    with pytest.raises(DataError):
        wigner_D(2, torch.eye(3, dtype=torch.int64))
    with pytest.raises(ConfigError):
        random_rotation(None)  # type: ignore[arg-type]
