"""Matrix product operators: ``W[(o1..oN), (i1..iN)] = W1[o1,i1] ... WN[oN,iN]``, cores ``(D_{k-1}, o_k, i_k, D_k)``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from entangle.errors import ShapeError
from entangle.tn.decompose import tt_svd
from entangle.tn.mps import MPS
from entangle.tn.tensor_train import TensorTrain

__all__ = ["MPO"]


class MPO(TensorTrain):
    """Matrix product operator (TT-matrix) mapping ``prod(in_dims)`` to ``prod(out_dims)``.

    Row (output) and column (input) multi-indices are row-major: ``o = o_1 o_2 ... o_N`` with
    ``o_1`` slowest, as ``torch.reshape`` orders them.

    >>> import torch
    >>> from entangle.tn import MPO
    >>> w = torch.randn(6, 8, dtype=torch.float64)
    >>> mpo, err = MPO.from_matrix(w, out_dims=[2, 3], in_dims=[2, 4])
    >>> bool(torch.allclose(mpo.to_matrix(), w)), float(err) < 1e-12
    (True, True)
    """

    n_phys = 2

    @property
    def out_dims(self) -> list[int]:
        return [c.shape[1] for c in self.cores]

    @property
    def in_dims(self) -> list[int]:
        return [c.shape[2] for c in self.cores]

    @classmethod
    def random(cls, out_dims: Sequence[int], in_dims: Sequence[int], bond_dim: int | Sequence[int], *,
               std: float | None = None, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64, device=None) -> MPO:
        """Gaussian random MPO whose dense matrix entries have standard deviation ``std`` in
        expectation (default ``1/sqrt(prod(in_dims))``, the variance-preserving choice of a
        linear layer)."""
        if len(out_dims) != len(in_dims):
            raise ShapeError(f"out_dims {list(out_dims)} and in_dims {list(in_dims)} need the same length")
        std = 1.0 / math.sqrt(math.prod(in_dims)) if std is None else std
        return cls(cls._random_cores(list(zip(out_dims, in_dims)), bond_dim, std, generator, dtype, device))

    @classmethod
    def identity(cls, dims: Sequence[int], *, dtype: torch.dtype = torch.float64, device=None) -> MPO:
        """Identity operator, bond dimension 1."""
        return cls([torch.eye(d, dtype=dtype, device=device).reshape(1, d, d, 1) for d in dims])

    @classmethod
    def from_dense(cls, tensor: torch.Tensor, max_bond: int | None = None, cutoff: float | None = None
                   ) -> tuple[MPO, torch.Tensor]:
        """TT-SVD of a dense operator tensor ``(o_1, ..., o_N, i_1, ..., i_N)``.

        Returns ``(mpo, discarded)`` with ``discarded = ||tensor - mpo||_F``.
        """
        if tensor.dim() % 2:
            raise ShapeError(f"an operator tensor needs an even number of legs, got shape {tuple(tensor.shape)}")
        n = tensor.dim() // 2
        perm = [leg for k in range(n) for leg in (k, n + k)]  # interleave (o_k, i_k)
        phys = [(tensor.shape[k], tensor.shape[n + k]) for k in range(n)]
        cores, discarded = tt_svd(tensor.permute(perm), phys, max_bond, cutoff)
        return cls(cores), discarded

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor, out_dims: Sequence[int], in_dims: Sequence[int],
                    max_bond: int | None = None, cutoff: float | None = None) -> tuple[MPO, torch.Tensor]:
        """TT-SVD of a matrix ``(prod(out_dims), prod(in_dims))``."""
        if matrix.shape != (math.prod(out_dims), math.prod(in_dims)):
            raise ShapeError(f"matrix of shape {tuple(matrix.shape)} does not factorise as "
                             f"{list(out_dims)} x {list(in_dims)}")
        return cls.from_dense(matrix.reshape(*out_dims, *in_dims), max_bond, cutoff)

    def to_dense(self) -> torch.Tensor:
        """Dense operator ``(o_1, ..., o_N, i_1, ..., i_N)``."""
        n = self.n_sites
        t = self.dense_tensor()  # legs (o1, i1, o2, i2, ...)
        return t.permute([2 * k for k in range(n)] + [2 * k + 1 for k in range(n)])

    def to_matrix(self) -> torch.Tensor:
        """Dense matrix ``(prod(out_dims), prod(in_dims))``."""
        return self.to_dense().reshape(math.prod(self.out_dims), math.prod(self.in_dims))

    def to_mps(self) -> MPS:
        """Vectorise by the Choi isomorphism: site ``k`` gets the fused leg ``(o_k, i_k)`` of size ``o_k * i_k``."""
        return MPS([c.reshape(c.shape[0], -1, c.shape[-1]) for c in self.cores])

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``y = x W^T`` for a batch ``x: (batch, prod(in_dims))``, returning ``(batch, prod(out_dims))``.

        Contracts site by site without forming ``W``; the cost is
        ``batch * sum_k D_{k-1} D_k o_1..o_k i_k..i_N``.
        """
        n_in = math.prod(self.in_dims)
        if x.dim() != 2 or x.shape[1] != n_in:
            raise ShapeError(f"MPO.apply expects (batch, {n_in}), got {tuple(x.shape)}")
        b = x.shape[0]
        state = x.reshape(b, 1, 1, n_in)  # [batch, outs so far, D_left, ins remaining]
        for core in self.cores:
            dl, o, i, dr = core.shape
            outs = state.shape[1]
            state = state.reshape(b, outs, dl, i, -1)
            state = torch.einsum("bqlir,loie->bqoer", state, core)  # [batch, outs, o_k, D_right, rest]
            state = state.reshape(b, outs * o, dr, -1)
        return state.reshape(b, -1)
