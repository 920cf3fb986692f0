"""Matrix and tensor decompositions: QR with a sign convention, truncated SVD, TT-SVD.

Truncation arguments follow one rule everywhere in entangle:

* ``max_bond``: keep at most this many singular values;
* ``cutoff``: *relative* threshold, keep singular values ``s_i > cutoff * s_0``;

and always at least one. The ``discarded`` weight returned alongside is the Frobenius norm of
what was dropped, ``sqrt(sum_{i >= k} s_i**2)``, which by Eckart–Young is exactly the error of the
best rank-``k`` approximation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from entangle.errors import ShapeError

__all__ = ["qr_positive", "svd", "truncated_svd", "truncation_rank", "tt_svd"]

# Lorentzian broadening of 1 / (s_i^2 - s_j^2) in the SVD backward pass (Liao et al., PRX 9,
# 031041 (2019), eq. 7): keeps gradients finite when singular values are degenerate.
_SVD_BROADENING = 1e-12


def qr_positive(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduced QR decomposition with ``diag(R) >= 0``, which makes it unique for full-rank input.

    Parameters
    ----------
    matrix : (m, n) tensor

    Returns
    -------
    Q : (m, k) with orthonormal columns, k = min(m, n)
    R : (k, n) upper triangular with non-negative diagonal
    """
    q, r = torch.linalg.qr(matrix)
    signs = torch.sign(torch.diagonal(r))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return q * signs, r * signs.unsqueeze(-1)


class _SVD(torch.autograd.Function):
    """Thin SVD whose backward pass stays finite for degenerate or zero singular values."""

    @staticmethod
    def forward(ctx, a):
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        ctx.save_for_backward(u, s, vh)
        return u, s, vh

    @staticmethod
    def backward(ctx, gu, gs, gvh):
        u, s, vh = ctx.saved_tensors
        v = vh.mH
        gv = gvh.mH if gvh is not None else None
        eps = _SVD_BROADENING * (s[0] ** 2 if s.numel() else 1.0)
        s2 = s**2
        diff = s2.unsqueeze(-2) - s2.unsqueeze(-1)  # [i, j] = s_j^2 - s_i^2
        f = diff / (diff**2 + eps)
        f.fill_diagonal_(0.0)
        s_inv = s / (s2 + eps)
        ga = torch.zeros(u.shape[0], v.shape[0], dtype=u.dtype, device=u.device)
        inner = torch.zeros(s.shape[0], s.shape[0], dtype=u.dtype, device=u.device)
        if gs is not None:
            inner = inner + torch.diag(gs)
        if gu is not None:
            ut_gu = u.mH @ gu
            inner = inner + (f * (ut_gu - ut_gu.mH)) * s.unsqueeze(0)
            ga = ga + (gu - u @ ut_gu) * s_inv.unsqueeze(0) @ vh
        if gv is not None:
            vt_gv = v.mH @ gv
            inner = inner + s.unsqueeze(1) * (f * (vt_gv - vt_gv.mH))
            ga = ga + u @ (s_inv.unsqueeze(1) * (gv - v @ vt_gv).mH)
        return ga + u @ inner @ vh


def svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``matrix = U diag(S) Vh`` that is safe to differentiate through.

    Unlike ``torch.linalg.svd`` its gradient is finite when singular values are (nearly)
    degenerate, as they are in product states and symmetric tensors.
    """
    if matrix.dim() != 2:
        raise ShapeError(f"svd expects a matrix, got shape {tuple(matrix.shape)}")
    if matrix.requires_grad:
        return _SVD.apply(matrix)
    return torch.linalg.svd(matrix, full_matrices=False)


def truncation_rank(s: torch.Tensor, max_bond: int | None = None, cutoff: float | None = None) -> int:
    """Number of singular values kept from a descending spectrum ``s`` (at least 1)."""
    if max_bond is not None and max_bond < 1:
        raise ShapeError(f"max_bond must be >= 1, got {max_bond}")
    if cutoff is not None and not (cutoff >= 0 and math.isfinite(cutoff)):
        raise ShapeError(f"cutoff must be a finite number >= 0, got {cutoff}")
    k = s.shape[0]
    if cutoff is not None and cutoff > 0 and k:
        k = int((s > cutoff * s[0]).sum().item())
    if max_bond is not None:
        k = min(k, max_bond)
    return max(k, 1)


def truncated_svd(matrix: torch.Tensor, max_bond: int | None = None, cutoff: float | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD truncated by ``max_bond`` and relative ``cutoff``.

    Parameters
    ----------
    matrix : (m, n) tensor

    Returns
    -------
    U : (m, k)
    S : (k,) descending
    Vh : (k, n)
    discarded : 0-dim tensor, ``sqrt(sum of dropped S**2)`` = ``||matrix - U diag(S) Vh||_F``
    """
    u, s, vh = svd(matrix)
    k = truncation_rank(s.detach(), max_bond, cutoff)
    discarded = torch.sqrt(torch.sum(s[k:].detach() ** 2))
    return u[:, :k], s[:k], vh[:k], discarded


def tt_svd(tensor: torch.Tensor, phys_shapes: Sequence[tuple[int, ...]] | None = None,
           max_bond: int | None = None, cutoff: float | None = None
           ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Tensor-train decomposition by successive truncated SVDs (Oseledets, SISC 33, 2295 (2011)).

    Parameters
    ----------
    tensor : dense tensor whose legs, in order, are the physical legs of site 1, site 2, ...
    phys_shapes : physical leg shapes per site, e.g. ``[(2,), (2,)]`` for an MPS or
        ``[(o1, i1), (o2, i2)]`` for an MPO with legs already interleaved. Default: one leg per site.
    max_bond, cutoff : truncation at every bond (see module docstring).

    Returns
    -------
    cores : list of (D_{k-1}, *phys_k, D_k) tensors; all but the last are left-isometric.
    discarded : total discarded weight ``sqrt(sum_bonds discarded_b**2)``. Because every step
        projects onto an orthonormal basis, the errors of successive steps are orthogonal and
        this equals ``||tensor - TT||_F`` exactly.
    """
    if phys_shapes is None:
        phys_shapes = [(d,) for d in tensor.shape]
    sizes = [math.prod(p) for p in phys_shapes]
    if math.prod(sizes) != tensor.numel():
        raise ShapeError(f"phys_shapes {list(phys_shapes)} do not match tensor of shape {tuple(tensor.shape)}")
    cores = []
    discarded_sq = torch.zeros((), dtype=tensor.real.dtype, device=tensor.device)
    rest = tensor.reshape(1, -1)
    left = 1
    for shape, size in zip(phys_shapes[:-1], sizes[:-1]):
        u, s, vh, disc = truncated_svd(rest.reshape(left * size, -1), max_bond, cutoff)
        cores.append(u.reshape(left, *shape, -1))
        discarded_sq = discarded_sq + disc**2
        rest = s.unsqueeze(1) * vh
        left = s.shape[0]
    cores.append(rest.reshape(left, *phys_shapes[-1], 1))
    return cores, torch.sqrt(discarded_sq)
