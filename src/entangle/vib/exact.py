"""Exact vibrational levels on a full DVR product grid (the reference for DMRG).

On the product grid the Hamiltonian is ``H = diag(V) + Σ_i 1 ⊗ ... ⊗ T_i ⊗ ... ⊗ 1``: the
potential is diagonal and the kinetic energy a Kronecker sum. ``H`` is applied to a vector
mode by mode (one ``tensordot`` per coordinate, cost ``prod(n) * Σ n_i``), never formed, and the
lowest eigenvalues are found by implicitly restarted Lanczos (ARPACK via
:func:`scipy.sparse.linalg.eigsh`). Small grids are diagonalised densely.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

from entangle.errors import ConfigError, DataError, ShapeError

__all__ = ["exact_levels", "apply_hamiltonian"]


def apply_hamiltonian(psi: torch.Tensor, potential: torch.Tensor,
                      kinetic_matrices: Sequence[torch.Tensor]) -> torch.Tensor:
    """``H psi`` on the product grid.

    Parameters
    ----------
    psi : (..., n_1, ..., n_f) one or a batch of grid wavefunctions.
    potential : (n_1, ..., n_f) potential values on the grid.
    kinetic_matrices : f matrices ``(n_i, n_i)``.

    Returns
    -------
    (..., n_1, ..., n_f)
    """
    f = potential.dim()
    lead = psi.dim() - f
    out = potential * psi
    for i, t in enumerate(kinetic_matrices):
        axis = lead + i
        out = out + torch.tensordot(t, psi, dims=([1], [axis])).movedim(0, axis)  # T_i acting on mode i
    return out


def exact_levels(potential: torch.Tensor, kinetic_matrices: Sequence[torch.Tensor], n_states: int = 1, *,
                 tol: float = 0.0, dense_limit: int = 2000, return_vectors: bool = False, seed: int = 0,
                 max_iter: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Lowest eigenvalues of ``diag(V) + Σ_i T_i`` on a DVR product grid.

    Parameters
    ----------
    potential : (n_1, ..., n_f) potential values on the product grid (Hartree).
    kinetic_matrices : f symmetric DVR kinetic matrices ``(n_i, n_i)`` (Hartree).
    n_states : number of levels.
    tol : ARPACK relative tolerance (0 = machine precision).
    dense_limit : grids with at most this many points are diagonalised densely.
    return_vectors : also return the eigenvectors.
    seed : seed of the Lanczos start vector.
    max_iter : ARPACK iteration limit (default ``max(1000, 20 * n_states)``).

    Returns
    -------
    energies : (n_states,) ascending, Hartree.
    vectors : (n_states, n_1, ..., n_f), only with ``return_vectors``.
    """
    potential = torch.as_tensor(potential)
    mats = [torch.as_tensor(t) for t in kinetic_matrices]
    shape = tuple(potential.shape)
    if len(mats) != potential.dim() or potential.dim() < 1:
        raise ShapeError(f"potential of shape {shape} needs one kinetic matrix per axis, got {len(mats)}")
    for i, (t, n) in enumerate(zip(mats, shape)):
        if t.shape != (n, n):
            raise ShapeError(f"kinetic matrix {i} must be ({n}, {n}) to match the grid, got {tuple(t.shape)}")
        if not torch.isfinite(t).all() or float((t - t.T).abs().max()) > 1e-12 * max(float(t.abs().max()), 1e-300):
            raise DataError("kinetic matrix must be finite and symmetric", field=f"kinetic_matrices[{i}]")
    if not torch.isfinite(potential).all():
        raise DataError("non-finite potential value on the grid", field="potential")
    size = math.prod(shape)
    if isinstance(n_states, bool) or not isinstance(n_states, int) or n_states < 1:
        raise ConfigError(f"n_states must be an integer >= 1, got {n_states!r}")
    if n_states > size:
        raise ConfigError(f"requested {n_states} states but the product grid {list(shape)} has only {size} points")
    v = potential.to(torch.float64)
    mats = [t.to(torch.float64) for t in mats]
    if size <= dense_limit or n_states >= size - 1:
        eye = [torch.eye(n, dtype=torch.float64) for n in shape]
        h = torch.diag(v.reshape(-1))
        for i, t in enumerate(mats):
            term = torch.ones(1, 1, dtype=torch.float64)
            for j in range(len(shape)):
                term = torch.kron(term, t if j == i else eye[j])
            h = h + term
        energies, vecs = torch.linalg.eigh(h)
        energies, vecs = energies[:n_states], vecs[:, :n_states].T
    else:
        def matvec(x: np.ndarray) -> np.ndarray:
            psi = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).reshape(shape)
            return apply_hamiltonian(psi, v, mats).reshape(-1).numpy()

        op = LinearOperator((size, size), matvec=matvec, dtype=np.float64)
        rng = np.random.default_rng(seed)
        v0 = rng.standard_normal(size)
        ncv = min(size, max(2 * n_states + 1, n_states + 40))
        vals, vecs_np = eigsh(op, k=n_states, which="SA", tol=tol, v0=v0, ncv=ncv,
                              maxiter=max_iter or max(1000, 20 * n_states))
        order = np.argsort(vals)
        energies = torch.from_numpy(vals[order].copy())
        vecs = torch.from_numpy(vecs_np[:, order].T.copy())
    if return_vectors:
        return energies, vecs.reshape(n_states, *shape)
    return energies
