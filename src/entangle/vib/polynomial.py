"""Polynomial (sum-of-products) potentials in tensor-train form.

A force field ``V(q) = Σ_t c_t Π_i q_i^{p_{t,i}}`` — harmonic terms, cubic and quartic couplings
(Watson-type force fields) — is exactly a tensor train over the monomial basis
``φ_ρ(q) = q^ρ``, ``ρ = 0..degree``: each term is a rank-1 train, the sum stacks them
block-diagonally, and TT rounding (Oseledets, SISC 33, 2295 (2011), alg. 2) removes the
redundant bond directions. The object exposes the same interface as the NN-MPO model
(``cores``, ``basis_values(k, q)``, ``U``, ``norm``), so it can stand in for it wherever a
tensor-train potential is consumed (:func:`entangle.vib.potential_mpo`, :func:`entangle.vib.vib_levels`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from entangle.errors import ConfigError, DataError, ShapeError
from entangle.tn import MPS
from entangle.tn.tensor_train import check_train_cores

__all__ = ["PolynomialTT"]


class PolynomialTT:
    """``V(x) = norm · Σ_ρ q_1^{ρ1} ... q_f^{ρf} W_1[1,ρ1,β1] ... W_f[β,ρf,1]`` with ``q = x U``.

    Parameters
    ----------
    cores : f tensors ``(D_{k-1}, degree + 1, D_k)``.
    U : (n, f) matrix with orthonormal columns (default identity, ``n = f``).
    norm : overall scale.

    >>> import torch
    >>> v = PolynomialTT.from_terms([(0.5, (2, 0)), (0.5, (0, 2)), (0.1, (1, 1))])
    >>> float(v(torch.tensor([[1.0, 2.0]], dtype=torch.float64))[0])
    2.7
    """

    def __init__(self, cores: Sequence[torch.Tensor], U: torch.Tensor | None = None, norm: float = 1.0):
        cores = [torch.as_tensor(c, dtype=torch.float64) for c in cores]
        if not cores:
            raise ShapeError("PolynomialTT needs at least one core")
        n_basis = cores[0].shape[1] if cores[0].dim() == 3 else -1
        check_train_cores(cores, n_basis)
        f = len(cores)
        U = torch.eye(f, dtype=torch.float64) if U is None else torch.as_tensor(U, dtype=torch.float64)
        if U.dim() != 2 or U.shape[1] != f or U.shape[0] < f:
            raise ShapeError(f"U must have shape (n >= {f}, {f}), got {tuple(U.shape)}")
        if not torch.allclose(U.T @ U, torch.eye(f, dtype=torch.float64), atol=1e-10):
            raise DataError("U must have orthonormal columns (UᵀU = I)", field="U")
        self.cores = cores
        self.U = U
        self.norm = float(norm)
        self.degree = n_basis - 1

    @classmethod
    def from_terms(cls, terms: Sequence[tuple[float, Sequence[int]]], U: torch.Tensor | None = None,
                   cutoff: float = 1e-14) -> PolynomialTT:
        """Build from terms ``(c_t, (p_1, ..., p_f))`` meaning ``c_t q_1^{p_1} ... q_f^{p_f}``.

        The stacked rank-``n_terms`` train is rounded with the relative singular-value ``cutoff``
        (exact up to that precision).
        """
        terms = list(terms)
        if not terms:
            raise ConfigError("from_terms needs at least one term")
        f = len(terms[0][1])
        for t, (coef, powers) in enumerate(terms):
            if len(powers) != f or any(int(p) != p or p < 0 for p in powers):
                raise ConfigError(f"term {t}: powers must be {f} non-negative integers, got {tuple(powers)}")
            if not torch.isfinite(torch.as_tensor(float(coef))):
                raise DataError(f"term {t}: non-finite coefficient {coef}", field="terms")
        degree = max(int(p) for _, powers in terms for p in powers)
        n_terms = len(terms)
        cores = []
        for k in range(f):
            dl = 1 if k == 0 else n_terms
            dr = 1 if k == f - 1 else n_terms
            core = torch.zeros(dl, degree + 1, dr, dtype=torch.float64)  # (D, degree+1, D')
            for t, (coef, powers) in enumerate(terms):
                value = float(coef) if k == 0 else 1.0
                core[0 if k == 0 else t, int(powers[k]), 0 if k == f - 1 else t] = value
            cores.append(core)
        if f > 1:
            cores = MPS(cores).truncate(cutoff=cutoff)[0].cores
        return cls(cores, U=U)

    @property
    def n_latent(self) -> int:
        return len(self.cores)

    def basis_values(self, k: int, q: torch.Tensor) -> torch.Tensor:
        """Monomials ``q^ρ``, ``ρ = 0..degree``: q (P,) -> (P, degree + 1)."""
        if not 0 <= k < self.n_latent:
            raise ShapeError(f"mode k={k} out of range [0, {self.n_latent})")
        if q.dim() != 1:
            raise ShapeError(f"q must be 1-d, got shape {tuple(q.shape)}")
        return q.unsqueeze(1) ** torch.arange(self.degree + 1, dtype=q.dtype, device=q.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``V(x)`` for x (B, n) -> (B,)."""
        if x.dim() != 2 or x.shape[1] != self.U.shape[0]:
            raise ShapeError(f"x must have shape (B, {self.U.shape[0]}), got {tuple(x.shape)}")
        q = x.to(torch.float64) @ self.U  # (B, f)
        env = torch.ones(x.shape[0], 1, dtype=torch.float64)  # (B, 1)
        for k, core in enumerate(self.cores):
            env = torch.einsum("ba,bn,anc->bc", env, self.basis_values(k, q[:, k]), core)  # (B, D_k)
        return self.norm * env[:, 0]
