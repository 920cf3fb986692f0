"""Vibrational Hamiltonians as matrix product operators on a DVR product grid.

The wavefunction lives on the product grid ``Q_{σ1} x ... x Q_{σf}`` of one DVR basis per
coordinate. In a DVR every function of the coordinates is diagonal, so a tensor-train potential

    V(q) = norm Σ φ_{ρ1}(q_1) ... φ_{ρf}(q_f) W_1[1, ρ1, β1] ... W_f[β_{f-1}, ρf, 1]

becomes the diagonal MPO (Hino & Kurashige, arXiv:2410.23858, sec. II.C)

    𝒲_i[β, σ', σ, β'] = Σ_ρ W_i[β, ρ, β'] φ_ρ(Q_σ) δ_{σσ'}.

The kinetic energy ``Σ_i -1/2 ∂²/∂q_i²`` (valid for orthogonal coordinates ``q = x U``) is a sum of
one-site operators, an MPO of bond dimension 2, and ``H = V + T`` stacks the two bond spaces
block-diagonally. MPO cores follow :class:`entangle.tn.MPO`: ``(D_left, d_out, d_in, D_right)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from entangle.errors import DataError, ShapeError
from entangle.tn import MPO, MPS
from entangle.tn.tensor_train import check_train_cores

__all__ = [
    "diagonal_mpo", "potential_mpo", "grid_potential_mpo", "kinetic_mpo", "add_mpo", "hamiltonian_mpo",
    "mpo_diagonal",
]


def _as_grids(grids: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for k, g in enumerate(grids):
        g = torch.as_tensor(g)
        if g.dim() != 1 or g.shape[0] < 1:
            raise ShapeError(f"grid {k} must be a non-empty 1-d tensor, got shape {tuple(g.shape)}")
        if not torch.isfinite(g).all():
            raise DataError("non-finite grid point", field=f"grids[{k}]")
        out.append(g)
    if not out:
        raise ShapeError("need at least one grid")
    return out


def diagonal_mpo(values: MPS) -> MPO:
    """Diagonal MPO ``diag(v)`` of a tensor ``v`` given as an MPS ``(D, n_k, D')``.

    ``core[β, σ', σ, β'] = v_core[β, σ, β'] δ_{σσ'}``; bond dimensions are those of ``values``.
    """
    cores = []
    for c in values.cores:
        d = torch.diag_embed(c.permute(0, 2, 1))  # (D, D', n, n) diagonal in the last two legs
        cores.append(d.permute(0, 2, 3, 1).contiguous())  # (D, n, n, D')
    return MPO(cores)


def potential_mpo(cores: Sequence[torch.Tensor], basis_values: Callable[[int, torch.Tensor], torch.Tensor],
                  grids: Sequence[torch.Tensor], norm: float | torch.Tensor = 1.0, *,
                  max_bond: int | None = None, cutoff: float | None = None) -> MPO:
    """Diagonal MPO of a tensor-train potential on a DVR product grid.

    Parameters
    ----------
    cores : f tensors, ``cores[i]: (D_{i-1}, N_i, D_i)`` with ``D_0 = D_f = 1``.
    basis_values : callable ``(i, q) -> (n_grid_i, N_i)`` giving ``φ_ρ(q)`` of coordinate ``i`` at
        the points ``q: (n_grid_i,)``.
    grids : f tensors ``(n_grid_i,)``, the DVR points of each coordinate.
    norm : overall scale, folded into the first core.
    max_bond, cutoff : optional TT rounding of the grid values (relative singular-value cutoff,
        see :mod:`entangle.tn.decompose`); ``None`` keeps the MPO exact.

    Returns
    -------
    MPO with cores ``(D_{i-1}, n_grid_i, n_grid_i, D_i)``, in the potential's energy unit times ``norm``.
    """
    grids = _as_grids(grids)
    cores = list(cores)
    if len(cores) != len(grids):
        raise ShapeError(f"{len(cores)} tensor-train cores but {len(grids)} grids")
    check_train_cores(cores)
    norm = torch.as_tensor(norm, dtype=torch.float64)
    if norm.numel() != 1 or not torch.isfinite(norm):
        raise DataError(f"norm must be a finite scalar, got {norm}", field="norm")
    grid_cores = []
    for i, (c, g) in enumerate(zip(cores, grids)):
        phi = basis_values(i, g)
        if not isinstance(phi, torch.Tensor) or tuple(phi.shape) != (g.shape[0], c.shape[1]):
            shape = tuple(phi.shape) if isinstance(phi, torch.Tensor) else type(phi).__name__
            raise ShapeError(f"basis_values({i}, q) must return ({g.shape[0]}, {c.shape[1]}), got {shape}")
        if not torch.isfinite(phi).all():
            raise DataError("non-finite basis function value on the grid", field=f"basis_values({i})")
        core, phi = c.detach().to(torch.float64), phi.detach().to(torch.float64)
        grid_cores.append(torch.einsum("arb,sr->asb", core, phi))  # (D, n_grid, D')
    grid_cores[0] = grid_cores[0] * norm
    values = MPS(grid_cores)
    if max_bond is not None or cutoff is not None:
        values, _ = values.truncate(max_bond=max_bond, cutoff=cutoff)
    return diagonal_mpo(values)


def grid_potential_mpo(potential: Callable[[torch.Tensor], torch.Tensor], grids: Sequence[torch.Tensor], *,
                       max_bond: int | None = None, cutoff: float | None = 1e-14,
                       max_points: int = 5_000_000) -> tuple[MPO, torch.Tensor]:
    """Diagonal MPO of any potential, sampled on the full product grid and compressed by TT-SVD.

    For small dimensions only: the ``prod(n_grid_i)`` values are formed densely.

    Parameters
    ----------
    potential : callable ``q: (n_points, f) -> (n_points,)``.
    grids : f tensors ``(n_grid_i,)``.
    max_bond, cutoff : TT-SVD truncation (relative singular-value cutoff).
    max_points : refuse product grids larger than this.

    Returns
    -------
    mpo : diagonal MPO of the sampled potential.
    discarded : ``||V_grid - V_TT||_F`` over the grid (0-dim tensor).
    """
    grids = _as_grids(grids)
    shape = [g.shape[0] for g in grids]
    if math.prod(shape) > max_points:
        raise ShapeError(f"product grid {shape} has {math.prod(shape)} points > max_points={max_points}; "
                         "use potential_mpo with a tensor-train potential instead")
    mesh = torch.meshgrid(*[g.to(torch.float64) for g in grids], indexing="ij")
    points = torch.stack([m.reshape(-1) for m in mesh], dim=1)  # (n_points, f)
    values = potential(points)
    if not isinstance(values, torch.Tensor) or values.shape != (points.shape[0],):
        got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ShapeError(f"potential(q) must return ({points.shape[0]},) for q of shape {tuple(points.shape)}, "
                         f"got {got}")
    if not torch.isfinite(values).all():
        raise DataError("non-finite potential value on the grid", field="potential")
    mps, discarded = MPS.from_dense(values.to(torch.float64).reshape(shape), max_bond=max_bond, cutoff=cutoff)
    return diagonal_mpo(mps), discarded


def _check_square_symmetric(matrices: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for k, t in enumerate(matrices):
        t = torch.as_tensor(t)
        if t.dim() != 2 or t.shape[0] != t.shape[1] or t.shape[0] < 1:
            raise ShapeError(f"kinetic matrix {k} must be square (n, n), got shape {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise DataError("non-finite entry", field=f"kinetic_matrices[{k}]")
        scale = float(t.abs().max())
        if float((t - t.mT).abs().max()) > 1e-12 * max(scale, 1e-300):
            raise DataError("kinetic matrix is not symmetric (the Hamiltonian would not be Hermitian)",
                            field=f"kinetic_matrices[{k}]")
        out.append(t)
    if not out:
        raise ShapeError("need at least one kinetic matrix")
    return out


def kinetic_mpo(kinetic_matrices: Sequence[torch.Tensor]) -> MPO:
    """MPO of ``T = Σ_i 1 ⊗ ... ⊗ T_i ⊗ ... ⊗ 1`` with bond dimension 2.

    Bond channel 0 carries "no kinetic term placed yet" (identity), channel 1 "term placed".

    Parameters
    ----------
    kinetic_matrices : f symmetric matrices ``(n_i, n_i)`` (Hartree).
    """
    mats = [t.to(torch.float64) for t in _check_square_symmetric(kinetic_matrices)]
    f = len(mats)
    if f == 1:
        return MPO([mats[0].reshape(1, *mats[0].shape, 1)])
    cores = []
    for i, t in enumerate(mats):
        n = t.shape[0]
        eye = torch.eye(n, dtype=t.dtype)
        if i == 0:
            core = torch.stack([eye, t], dim=-1).unsqueeze(0)  # (1, n, n, 2)
        elif i == f - 1:
            core = torch.stack([t, eye], dim=0).unsqueeze(-1)  # (2, n, n, 1)
        else:
            core = torch.zeros(2, n, n, 2, dtype=t.dtype)  # (2, n, n, 2)
            core[0, :, :, 0] = eye
            core[0, :, :, 1] = t
            core[1, :, :, 1] = eye
        cores.append(core)
    return MPO(cores)


def add_mpo(a: MPO, b: MPO) -> MPO:
    """Sum of two MPOs by block-diagonal stacking of their bonds (bond dims add).

    The first cores are concatenated along their right bond, the last cores along their left
    bond, and middle cores are block-diagonal.
    """
    if a.n_sites != b.n_sites or a.phys_shapes != b.phys_shapes:
        raise ShapeError(f"add_mpo: physical shapes differ: {a.phys_shapes} vs {b.phys_shapes}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    ca = [c.to(dtype) for c in a.cores]
    cb = [c.to(dtype) for c in b.cores]
    if a.n_sites == 1:
        return MPO([ca[0] + cb[0]])
    cores = [torch.cat([ca[0], cb[0]], dim=-1)]
    for x, y in zip(ca[1:-1], cb[1:-1]):
        core = torch.zeros(x.shape[0] + y.shape[0], x.shape[1], x.shape[2], x.shape[3] + y.shape[3], dtype=dtype)
        core[: x.shape[0], :, :, : x.shape[3]] = x
        core[x.shape[0]:, :, :, x.shape[3]:] = y
        cores.append(core)
    cores.append(torch.cat([ca[-1], cb[-1]], dim=0))
    return MPO(cores)


def hamiltonian_mpo(potential: MPO, kinetic_matrices: Sequence[torch.Tensor]) -> MPO:
    """``H = V + Σ_i T_i`` as an MPO of bond dimension ``D_V + 2``.

    Parameters
    ----------
    potential : MPO of the potential on the DVR product grid (e.g. from :func:`potential_mpo`),
        in Hartree.
    kinetic_matrices : f DVR kinetic matrices ``(n_i, n_i)`` in Hartree, matching the grid sizes.
    """
    t = kinetic_mpo(kinetic_matrices)
    if t.phys_shapes != potential.phys_shapes:
        raise ShapeError(f"kinetic matrices act on {t.in_dims} but the potential MPO on {potential.in_dims}")
    return add_mpo(potential, t)


def mpo_diagonal(mpo: MPO, *, atol: float = 0.0) -> torch.Tensor:
    """Values of a diagonal MPO on the product grid, ``(n_1, ..., n_f)``.

    Raises :class:`ShapeError` if some core has an off-diagonal entry larger than ``atol`` (then
    the MPO is not a function of the coordinates). The dense tensor is formed: small grids only.
    """
    diag_cores = []
    for k, c in enumerate(mpo.cores):
        if c.shape[1] != c.shape[2]:
            raise ShapeError(f"core {k} is not square in its physical legs: {tuple(c.shape)}")
        d = torch.diagonal(c, dim1=1, dim2=2)  # (D, D', n)
        off = c - torch.diag_embed(d).permute(0, 2, 3, 1)  # (D, n, n, D') off-diagonal part
        if off.numel() and float(off.abs().max()) > atol:
            raise ShapeError(f"MPO core {k} has off-diagonal entries up to {float(off.abs().max()):.3g}: "
                             "not a diagonal operator")
        diag_cores.append(d.permute(0, 2, 1))  # (D, n, D')
    return MPS(diag_cores).to_dense()
