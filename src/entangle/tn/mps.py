"""Matrix product states: ``T[s1, ..., sN] = A1[s1] A2[s2] ... AN[sN]``, cores ``(D_{k-1}, d_k, D_k)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from entangle.errors import ShapeError
from entangle.tn.contract import einsum
from entangle.tn.decompose import tt_svd
from entangle.tn.tensor_train import TensorTrain

__all__ = ["MPS"]


class MPS(TensorTrain):
    """Matrix product state (tensor train) over sites with one physical leg each.

    >>> import torch
    >>> from entangle.tn import MPS
    >>> psi = MPS.random([2, 3, 2], bond_dim=2, generator=torch.Generator().manual_seed(0))
    >>> psi.to_dense().shape
    torch.Size([2, 3, 2])
    >>> round(float(psi.norm()), 6)
    1.0
    """

    n_phys = 1

    @property
    def dims(self) -> list[int]:
        return [c.shape[1] for c in self.cores]

    @classmethod
    def random(cls, dims: Sequence[int], bond_dim: int | Sequence[int], *, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64, device=None, norm: float | None = 1.0) -> MPS:
        """Gaussian random MPS.

        With ``norm`` given (default 1) the result is scaled to exactly that Frobenius norm;
        with ``norm=None`` each dense entry has unit variance in expectation.
        """
        cores = cls._random_cores([(d,) for d in dims], bond_dim, 1.0, generator, dtype, device)
        mps = cls(cores)
        return mps if norm is None else mps * (norm / mps.norm())

    @classmethod
    def product_state(cls, vectors: Sequence[torch.Tensor]) -> MPS:
        """Bond-dimension-1 MPS ``v1 ⊗ v2 ⊗ ...`` from vectors ``(d_k,)``."""
        return cls([v.reshape(1, -1, 1) for v in vectors])

    @classmethod
    def from_dense(cls, tensor: torch.Tensor, max_bond: int | None = None, cutoff: float | None = None
                   ) -> tuple[MPS, torch.Tensor]:
        """TT-SVD of a dense tensor ``(d_1, ..., d_N)``; returns ``(mps, discarded)`` where
        ``discarded = ||tensor - mps||_F``."""
        cores, discarded = tt_svd(tensor, None, max_bond, cutoff)
        return cls(cores), discarded

    def to_dense(self) -> torch.Tensor:
        """Dense tensor ``(d_1, ..., d_N)``."""
        return self.dense_tensor()

    def contract_product(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``<psi | x_1 ⊗ ... ⊗ x_N>`` for a batch of product states.

        Parameters
        ----------
        inputs : N tensors ``(batch, d_k)``

        Returns
        -------
        (batch,) tensor
        """
        if len(inputs) != self.n_sites:
            raise ShapeError(f"contract_product: expected {self.n_sites} site inputs, got {len(inputs)}")
        env = None
        for k, (x, core) in enumerate(zip(inputs, self.cores)):
            if x.dim() != 2 or x.shape[1] != core.shape[1]:
                raise ShapeError(f"contract_product: input {k} must be (batch, {core.shape[1]}), got {tuple(x.shape)}")
            if env is None:
                env = x @ core[0]  # [batch, D_1]
            else:
                env = einsum("bl,bd,ldr->br", env, x, core)
        return env[:, 0]

    def contract_dense(self, x: torch.Tensor) -> torch.Tensor:
        """``<psi | X_b>`` for a batch of dense tensors ``x: (batch, d_1, ..., d_N)`` -> ``(batch,)``."""
        if tuple(x.shape[1:]) != tuple(self.dims):
            raise ShapeError(f"contract_dense: expected (batch, {', '.join(map(str, self.dims))}), got {tuple(x.shape)}")
        b = x.shape[0]
        state = x.reshape(b, 1, -1)  # [batch, D_left, rest]
        for core in self.cores:
            dl, d, dr = core.shape
            state = state.reshape(b, dl * d, -1)
            state = einsum("bkr,kq->bqr", state, core.reshape(dl * d, dr))  # [batch, D_right, rest]
        return state.reshape(b)
