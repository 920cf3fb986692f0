"""Shared machinery of matrix product states and operators.

A tensor train is a list of cores ``cores[k]: (D_{k-1}, *phys_k, D_k)`` with ``D_0 = D_N = 1``.
MPS have one physical leg per site, MPO two (out, in). Everything here depends only on the
cores being reshaped to ``(D_{k-1}, prod(phys_k), D_k)``, so MPS and MPO share it.

Objects are values: methods return new tensor trains and never modify ``self``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, TypeVar

import torch

from entangle.errors import ShapeError
from entangle.tn.contract import einsum
from entangle.tn.decompose import qr_positive, svd, truncated_svd
from entangle.tn.entropy import von_neumann_entropy

__all__ = ["TensorTrain", "check_train_cores"]

T = TypeVar("T", bound="TensorTrain")


def check_train_cores(cores: Sequence[torch.Tensor], phys_dim: int | None = None) -> None:
    """Raise :class:`ShapeError` unless ``cores`` chain as ``(1, N, D_1), (D_1, N, D_2), ...,
    (D_{f-1}, N, 1)`` (with ``N == phys_dim`` on every core when given)."""
    left = 1
    for k, c in enumerate(cores):
        if c.dim() != 3 or c.shape[0] != left or (phys_dim is not None and c.shape[1] != phys_dim):
            wanted = "N" if phys_dim is None else phys_dim
            raise ShapeError(f"core {k} must have shape ({left}, {wanted}, D), got {tuple(c.shape)}")
        left = c.shape[2]
    if left != 1:
        raise ShapeError(f"the last core must end with bond 1, got {left}")


class TensorTrain:
    """Base class of :class:`~entangle.tn.MPS` and :class:`~entangle.tn.MPO`."""

    n_phys: ClassVar[int] = 1

    def __init__(self, cores: Sequence[torch.Tensor]):
        cores = list(cores)
        if not cores:
            raise ShapeError(f"{type(self).__name__} needs at least one core")
        for k, core in enumerate(cores):
            if core.dim() != self.n_phys + 2:
                raise ShapeError(f"{type(self).__name__} core {k} must have {self.n_phys + 2} legs "
                                 f"(D_left, {'d' if self.n_phys == 1 else 'd_out, d_in'}, D_right), got shape {tuple(core.shape)}")
            if k > 0 and cores[k - 1].shape[-1] != core.shape[0]:
                raise ShapeError(f"bond {k - 1}: core {k - 1} has right bond {cores[k - 1].shape[-1]} "
                                 f"but core {k} has left bond {core.shape[0]}")
        if cores[0].shape[0] != 1 or cores[-1].shape[-1] != 1:
            raise ShapeError(f"boundary bonds must be 1, got {cores[0].shape[0]} and {cores[-1].shape[-1]}")
        self.cores = cores

    # ----------------------------------------------------------------- properties
    @property
    def n_sites(self) -> int:
        return len(self.cores)

    @property
    def bond_dims(self) -> list[int]:
        """Internal bond dimensions ``[D_1, ..., D_{N-1}]``."""
        return [c.shape[-1] for c in self.cores[:-1]]

    @property
    def phys_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(c.shape[1:-1]) for c in self.cores]

    @property
    def dtype(self) -> torch.dtype:
        return self.cores[0].dtype

    @property
    def device(self) -> torch.device:
        return self.cores[0].device

    def num_parameters(self) -> int:
        return sum(c.numel() for c in self.cores)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(phys={self.phys_shapes}, bonds={self.bond_dims}, dtype={self.dtype})"

    def _new(self: T, cores: Sequence[torch.Tensor]) -> T:
        return type(self)(cores)

    def to(self: T, *args, **kwargs) -> T:
        return self._new([c.to(*args, **kwargs) for c in self.cores])

    def detach(self: T) -> T:
        return self._new([c.detach() for c in self.cores])

    def _flat(self, k: int) -> torch.Tensor:
        c = self.cores[k]
        return c.reshape(c.shape[0], -1, c.shape[-1])  # [D_left, P, D_right]

    # ------------------------------------------------------------ dense and scalars
    def dense_tensor(self) -> torch.Tensor:
        """Full tensor with legs in site order ``(*phys_1, *phys_2, ...)``. Exponential in size."""
        out = self._flat(0)[0]  # [P1, D1]
        for k in range(1, self.n_sites):
            out = out @ self._flat(k).reshape(self.cores[k].shape[0], -1)
            out = out.reshape(-1, self.cores[k].shape[-1])
        return out.reshape(*[d for shape in self.phys_shapes for d in shape])

    def inner(self, other: TensorTrain) -> torch.Tensor:
        """``<self|other>`` (Frobenius inner product, complex-conjugating ``self``)."""
        if self.phys_shapes != other.phys_shapes:
            raise ShapeError(f"inner: physical shapes differ: {self.phys_shapes} vs {other.phys_shapes}")
        env = torch.ones(1, 1, dtype=torch.promote_types(self.dtype, other.dtype), device=self.device)
        for k in range(self.n_sites):
            env = einsum("ab,apc,bpd->cd", env, self._flat(k).conj(), other._flat(k))
        return env[0, 0]

    def norm(self) -> torch.Tensor:
        """Frobenius norm of the represented tensor."""
        return torch.sqrt(self.inner(self).real.clamp_min(0))

    def __mul__(self: T, factor: float | torch.Tensor) -> T:
        return self._new([self.cores[0] * factor] + self.cores[1:])

    __rmul__ = __mul__

    # ------------------------------------------------------------ canonical forms
    def canonicalize(self: T, center: int) -> T:
        """Mixed-canonical form: cores left of ``center`` left-isometric, right of it right-isometric.

        The represented tensor is unchanged; the norm lives in ``cores[center]``. QR-based (with
        ``diag(R) >= 0``), so the gauge is unique for full-rank cores.
        """
        if not 0 <= center < self.n_sites:
            raise ShapeError(f"center {center} out of range for {self.n_sites} sites")
        cores = list(self.cores)
        for k in range(center):
            c = cores[k]
            q, r = qr_positive(c.reshape(-1, c.shape[-1]))
            cores[k] = q.reshape(*c.shape[:-1], q.shape[-1])
            cores[k + 1] = torch.tensordot(r, cores[k + 1], dims=([1], [0]))
        for k in range(self.n_sites - 1, center, -1):
            c = cores[k]
            q, r = qr_positive(c.reshape(c.shape[0], -1).mT)  # c = r^T q^T (an LQ decomposition)
            cores[k] = q.mT.reshape(q.shape[-1], *c.shape[1:])
            cores[k - 1] = torch.tensordot(cores[k - 1], r.mT, dims=([cores[k - 1].dim() - 1], [0]))
        return self._new(cores)

    def left_canonicalize(self: T) -> T:
        return self.canonicalize(self.n_sites - 1)

    def right_canonicalize(self: T) -> T:
        return self.canonicalize(0)

    def isometry_error(self, k: int, side: str) -> float:
        """``||A^† A - I||`` for core ``k`` viewed as a left (``side="left"``) or right isometry."""
        flat = self._flat(k)
        m = flat.reshape(-1, flat.shape[-1]) if side == "left" else flat.reshape(flat.shape[0], -1).mT
        gram = m.conj().mT @ m
        return float(torch.linalg.norm(gram - torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)))

    # ---------------------------------------------------------- truncation, spectra
    def truncate(self: T, max_bond: int | None = None, cutoff: float | None = None) -> tuple[T, torch.Tensor]:
        """Compress every bond by SVD from a left-canonical form, sweeping right to left.

        Returns the new tensor train and the total discarded weight, which equals the Frobenius
        error of the compression (the per-bond errors are mutually orthogonal).
        """
        cores = list(self.left_canonicalize().cores)
        discarded_sq = torch.zeros((), dtype=torch.empty(0, dtype=self.dtype).real.dtype, device=self.device)
        for k in range(self.n_sites - 1, 0, -1):
            c = cores[k]
            u, s, vh, disc = truncated_svd(c.reshape(c.shape[0], -1), max_bond, cutoff)
            cores[k] = vh.reshape(-1, *c.shape[1:])
            cores[k - 1] = torch.tensordot(cores[k - 1], u * s, dims=([cores[k - 1].dim() - 1], [0]))
            discarded_sq = discarded_sq + disc**2
        return self._new(cores), torch.sqrt(discarded_sq)

    def schmidt_spectra(self) -> list[torch.Tensor]:
        """Singular values across every bond, ``[s_1, ..., s_{N-1}]`` (not normalised)."""
        cores = list(self.right_canonicalize().cores)
        spectra = []
        for k in range(self.n_sites - 1):
            c = cores[k]
            u, s, vh = svd(c.reshape(-1, c.shape[-1]))
            cores[k + 1] = torch.tensordot(s.unsqueeze(1) * vh, cores[k + 1], dims=([1], [0]))
            spectra.append(s)
        return spectra

    def schmidt_values(self, bond: int) -> torch.Tensor:
        """Singular values across bond ``bond`` (between sites ``bond`` and ``bond + 1``)."""
        if not 0 <= bond < self.n_sites - 1:
            raise ShapeError(f"bond {bond} out of range for {self.n_sites} sites")
        c = self.canonicalize(bond).cores[bond]
        return svd(c.reshape(-1, c.shape[-1]))[1]

    def entropies(self) -> torch.Tensor:
        """Von Neumann entanglement entropy (nats) at every bond, shape ``(N-1,)``."""
        if self.n_sites == 1:
            return torch.zeros(0, dtype=self.dtype, device=self.device)
        return torch.stack([von_neumann_entropy(s) for s in self.schmidt_spectra()])

    @staticmethod
    def _random_cores(phys_shapes: Sequence[tuple[int, ...]], bond_dim: int | Sequence[int], std: float,
                      generator: torch.Generator | None, dtype: torch.dtype, device) -> list[torch.Tensor]:
        n = len(phys_shapes)
        bonds = [bond_dim] * (n - 1) if isinstance(bond_dim, int) else list(bond_dim)
        if len(bonds) != n - 1 or any(b < 1 for b in bonds):
            raise ShapeError(f"bond dimensions must be {n - 1} integers >= 1, got {bond_dim}")
        # Each dense entry sums prod(bonds) products of N core entries, so its variance is
        # prod(bonds) * prod_k var_k. Give every core the same variance to hit std**2.
        core_std = (std**2 / math.prod(bonds)) ** (1.0 / (2 * n))
        dims = [1, *bonds, 1]
        return [torch.randn(dims[k], *phys_shapes[k], dims[k + 1], generator=generator, dtype=dtype,
                            device=device) * core_std for k in range(n)]
