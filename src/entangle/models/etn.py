"""Equivariant tensor network (ETN) interatomic potential.

Hodapp & Shapeev, *Equivariant tensor network potentials* (2024), Secs. 5–6.

Physics
-------
For every atom ``i`` the covariant features of eq. (38),

    F[i, l, m, μ, β, γ] = Σ_j Y_lm(r̂_ij) Q_μ(|r_ij|) z^i_β z^j_γ,

with Chebyshev radial functions ``Q_μ(r) = T_μ(ξ(r)) ((r_cut - r) / (r_cut - r_min))²`` (the
MTP smooth cutoff, App. C.1; ``μ < N_rad(l)``), are contracted over species by ``A_l``
(``N_spec_rank(l) x N_spec x N_spec``) and then over radial functions and species rank by
``B_l`` (``N_rad_rank(l) x N_rad(l) x N_spec_rank(l)``), Table 1. ``A`` and ``B`` are shared by
all cores. The result, divided by ``feature_scale`` and prefixed by a constant ``1`` in the
``l = 0`` block (Remark 4), is the input ``v_i`` of an equivariant tensor train of order ``d``
(eq. 34)

    E_i = T¹( … T^{d-1}( T^d v_i ) v_i … ) v_i,

whose cores are :class:`~entangle.so3.equivariant.EquivariantTensor` s with coefficient blocks
per allowed sector triple. Bonds adjacent to the two order-2 end cores carry natural parity
only; for ``d >= 4`` the inner bonds also carry unnatural parity (the "imaginary" parts of
Algorithm 2), so the energy is O(3)-invariant by the parity rule of Sec. 3.4.2. The total
energy is ``Σ_i (E_i + e_{s_i})`` (eq. 35) with per-species reference energies ``e_s``.

Channel counts per ``l`` follow the decay rule of eq. (45) from the six hyperparameters of
eq. (46): ``N_rad(l)`` with ``a = 1``; ``N_spec_rank(l)``, ``N_rad_rank(l)`` and
``N_ett_rank(l)`` with ``a = 5``. ``L`` is the *number* of angular momenta (``l = 0..L-1``),
as in the paper's Table 2 (ETN2, ``L = 2``, "a maximum angular momentum of only 1").

Computation
-----------
The features of eq. (38) with the species one-hot vectors folded into the species pair
``t = N_spec s_i + s_j`` are ``F_l[i, m, t, μ] = Σ_{j: t_ij = t} Y_lm(r̂_ij) Q_μ(r_ij)``; they
depend on the positions only and are computed once per configuration (:class:`ETNGeometry`,
reused over all optimiser iterations in training). The species and radial contractions are
fused into one matrix per ``l``, ``W_l[t, μ, λ] = Σ_κ B_l[λ, μ, κ] A_l[κ, t]``, so
``v_l = F_l W_l`` is one matrix product per ``l`` for all atoms.

Each core applied to ``v_i`` is a small matrix per atom; the train is their product and its
input gradient ``g_i = ∂E_i/∂v_i`` costs one more matrix product per core
(:func:`ett_energy_and_gradient`; dense cores assembled from the coefficient blocks by one
scatter).

Forces ``-∂E/∂x`` and the stress ``(1/V) ∂E/∂ε`` (ASE sign) are computed in closed form, not by
autograd through the positions: with ``G[i, t, lmμ] = Σ_λ g_i[lmλ] W_l[t, μ, λ]`` (per atom),
each pair ``p = (i, j)`` contributes

    ∂E/∂r_p = Σ_{lmμ} G[i, t_p, lmμ] ∂(Y_lm Q_μ)/∂r_p
            = Σ_{lm} (Σ_μ G Q_μ) ∇Y_lm + (Σ_{lmμ} G Y_lm Q'_μ) r̂_p,

with ``∇Y_lm = (∇S_lm(r̂) - l Y_lm r̂) / r``, where the gradient of a solid harmonic ``S_lm``
is a fixed linear combination of the ``S_{l-1,m'}`` (:func:`harmonics_with_gradient`).
In training the pair Jacobian ``∂(Y_lm Q_μ)/∂r_p`` is stored with the geometry, so an
evaluation is a handful of matrix products; energies, forces and stress are plain
differentiable functions of the parameters (training on forces needs one backward pass).
No step loops over atoms or pairs in Python.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from entangle.data.atoms import AtomsBatch, Structure
from entangle.data.neighbours import Neighbours, neighbour_list, pair_vectors
from entangle.errors import ConfigError, DataError
from entangle.io import DTYPES, register_model
from entangle.so3.equivariant import EquivariantTensor, Sector, Sectors, coupling, decay_channels
from entangle.so3.harmonics import real_spherical_harmonics, solid_harmonics

__all__ = ["ETNConfig", "ETNPotential", "ETNGeometry", "etn_channels", "harmonics_with_gradient",
           "chebyshev_radial", "ett_energy_and_gradient"]


@dataclass
class ETNConfig:
    """Hyperparameters of an ETN potential (fully rebuild the model).

    Attributes
    ----------
    species : list of int
        Atomic numbers the potential knows, in the order of the species index.
    n_rad, d, L, spec_rank, rad_rank, ett_rank : int
        The hyperparameters ``{N_rad, d, L, N_spec_rank, N_rad_rank, N_ett_rank}`` of eq. (46);
        ``L`` is the number of angular momenta (``l_max = L - 1``).
    r_cut, r_min : float
        Cutoff radius and lower end of the Chebyshev interval, Å.
    decay_rad, decay_rank : float
        Decay lengths ``a`` of eq. (45) for radial functions and for ranks.
    reference_energies : list of float
        Per-species energies ``e_s`` added to every atom, eV (same order as ``species``).
    train_reference : bool
        Whether ``e_s`` are trainable parameters (fitted) or fixed buffers (averaged/isolated).
    feature_scale : float
        Features are divided by this (typically the mean number of neighbours), dimensionless.
    init_scale : float
        Scale of the random initial ETT coefficients (added to a unit scalar path).
    dtype : "float64" or "float32"
    seed : int
        Seed of the random initialisation.
    bonds : list of bond sectors, optional
        Explicit ``[[l, p, n], ...]`` for each of the ``d - 1`` bonds, overriding the decay
        rule; written by :meth:`ETNPotential.set_core` when sweeps change bond dimensions, so
        that a saved model rebuilds with its actual bonds.
    """

    species: list[int]
    n_rad: int = 7
    d: int = 3
    L: int = 2
    spec_rank: int = 2
    rad_rank: int = 2
    ett_rank: int = 2
    r_cut: float = 5.0
    r_min: float = 0.0
    decay_rad: float = 1.0
    decay_rank: float = 5.0
    reference_energies: list[float] = field(default_factory=list)
    train_reference: bool = True
    feature_scale: float = 1.0
    init_scale: float = 0.03
    dtype: str = "float64"
    seed: int = 0
    bonds: list[list[list[int]]] | None = None

    def __post_init__(self) -> None:
        self.species = [int(z) for z in self.species]
        if not self.species or len(set(self.species)) != len(self.species) \
                or any(not 1 <= z <= 118 for z in self.species):
            raise ConfigError(f"species must be distinct atomic numbers 1..118, got {self.species}")
        for name in ("n_rad", "d", "L", "spec_rank", "rad_rank", "ett_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        if not 0.0 <= self.r_min < self.r_cut or not math.isfinite(self.r_cut):
            raise ConfigError(f"need 0 <= r_min < r_cut, got r_min={self.r_min}, r_cut={self.r_cut}")
        if not self.reference_energies:
            self.reference_energies = [0.0] * len(self.species)
        self.reference_energies = [float(e) for e in self.reference_energies]
        if len(self.reference_energies) != len(self.species):
            raise ConfigError("reference_energies needs one value per species")
        if not (self.feature_scale > 0 and math.isfinite(self.feature_scale)):
            raise ConfigError(f"feature_scale must be positive, got {self.feature_scale}")
        if not (self.init_scale >= 0 and math.isfinite(self.init_scale)):
            raise ConfigError(f"init_scale must be >= 0, got {self.init_scale}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.decay_rad <= 0 or self.decay_rank <= 0:
            raise ConfigError("decay lengths must be positive")
        if self.bonds is not None:
            if len(self.bonds) != self.d - 1:
                raise ConfigError(f"bonds needs {self.d - 1} entries (d - 1), got {len(self.bonds)}")
            self.bonds = [[[int(x) for x in block] for block in bond] for bond in self.bonds]
            for bond in self.bonds:
                Sectors(tuple(tuple(b) for b in bond))  # validates


def etn_channels(config: ETNConfig) -> dict[str, list[int]]:
    """Channel counts per ``l = 0..L-1`` from the decay rule (eq. 45)."""
    l_max = config.L - 1
    return {
        "n_rad": decay_channels(config.n_rad, l_max, config.decay_rad),
        "spec_rank": decay_channels(config.spec_rank, l_max, config.decay_rank),
        "rad_rank": decay_channels(config.rad_rank, l_max, config.decay_rank),
        "ett_rank": decay_channels(config.ett_rank, l_max, config.decay_rank),
    }


def _core_legs(config: ETNConfig, phys: Sectors) -> list[tuple[Sectors, Sectors, Sectors]]:
    """Sectors of the three legs of each core (left bond, input, right bond)."""
    d = config.d
    if config.bonds is not None:
        bonds = [Sectors(tuple(tuple(b) for b in bond)) for bond in config.bonds]
    else:
        ranks = etn_channels(config)["ett_rank"]
        natural = Sectors.natural(ranks)
        both = Sectors(tuple(b for l, r in enumerate(ranks) for b in ((l, (-1) ** l, r),
                                                                       (l, -(-1) ** l, r))))
        bonds = [natural if b in (0, d - 2) else both for b in range(d - 1)]
    trivial = Sectors.trivial()
    return [(trivial if k == 0 else bonds[k - 1], phys, trivial if k == d - 1 else bonds[k])
            for k in range(d)]


_SCALAR_KEY = ((0, 1), (0, 1), (0, 1))  # the block of a core coupling three even scalars


_MIN_BLOCKED_CORE = 2**16  # entries of the smallest dense core contracted block by block


@dataclass
class CoreBlock:
    """One nonzero block of a dense core: ``core[rows, phys, cols]`` (all other physical rows
    of ``rows x cols`` are zero by the triangle and parity rules of eq. 25). Its index tensors
    stay on the CPU, the only device the blocked contraction runs on."""

    rows: slice
    cols: slice
    phys: torch.Tensor  # (n_phys,) int64 physical indices

    def __post_init__(self) -> None:
        self.row_idx = torch.arange(self.rows.start, self.rows.stop)
        self.col_idx = torch.arange(self.cols.start, self.cols.stop)


class _CoreLayout:
    """Block layout of one core's flat parameter vector and its dense scatter indices."""

    def __init__(self, legs: tuple[Sectors, Sectors, Sectors]):
        self.legs = legs
        self.keys = list(EquivariantTensor.keys_for(legs))
        self.shapes, self.offsets = [], []
        size = 0
        for key in self.keys:
            shape = tuple(leg.mult[s] for leg, s in zip(legs, key))
            self.shapes.append(shape)
            self.offsets.append(size)
            size += int(np.prod(shape))
        self.size = size
        self.dims = tuple(leg.dim for leg in legs)
        dense_idx, param_idx, values = [], [], []
        _, d2, d3 = self.dims
        for key, shape, off in zip(self.keys, self.shapes, self.offsets):
            w = coupling(key[0][0], key[1][0], key[2][0]).numpy()
            m1, m2, m3 = np.nonzero(np.abs(w) > 1e-15)
            val = w[m1, m2, m3]
            n1, n2, n3 = shape
            c1, c2, c3 = np.meshgrid(np.arange(n1), np.arange(n2), np.arange(n3), indexing="ij")
            c1, c2, c3 = c1.ravel(), c2.ravel(), c3.ravel()
            o1, o2, o3 = (leg.offsets[s] for leg, s in zip(legs, key))
            row1 = o1 + m1[:, None] * n1 + c1[None, :]
            row2 = o2 + m2[:, None] * n2 + c2[None, :]
            row3 = o3 + m3[:, None] * n3 + c3[None, :]
            dense_idx.append(((row1 * d2 + row2) * d3 + row3).ravel())
            param_idx.append(np.broadcast_to(off + (c1 * n2 + c2) * n3 + c3,
                                             row1.shape).ravel())
            values.append(np.broadcast_to(val[:, None], row1.shape).ravel())

        def cat(parts: list[np.ndarray], dt: type) -> np.ndarray:
            return np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)

        self.dense_idx = torch.from_numpy(cat(dense_idx, np.int64))
        self.param_idx = torch.from_numpy(cat(param_idx, np.int64))
        self.values = torch.from_numpy(cat(values, np.float64))
        self.blocks = self._block_plan()

    def _block_plan(self) -> list[CoreBlock] | None:
        """The nonzero ``(left sector, right sector)`` blocks of the dense core, each with the
        physical rows its triangle and parity rules allow; ``None`` for a small core (the
        per-block overhead outweighs the saving) or when skipping the zeros would save less
        than a fifth of the dense contraction's work."""
        if np.prod(self.dims) < _MIN_BLOCKED_CORE:
            return None
        left, phys, right = self.legs
        allowed: dict[tuple[Sector, Sector], set[Sector]] = {}
        for s1, s2, s3 in self.keys:
            allowed.setdefault((s1, s3), set()).add(s2)

        def span(leg: Sectors, sector: Sector) -> tuple[int, int]:
            start = leg.offsets[sector]
            return start, start + (2 * sector[0] + 1) * leg.mult[sector]

        blocks, work = [], 0
        for (s1, s3), phys_sectors in allowed.items():
            rows, cols = span(left, s1), span(right, s3)
            idx = np.concatenate([np.arange(*span(phys, s2))
                                  for s2 in sorted(phys_sectors, key=phys.offsets.get)])
            blocks.append(CoreBlock(slice(*rows), slice(*cols), torch.from_numpy(idx)))
            work += (rows[1] - rows[0]) * (cols[1] - cols[0]) * len(idx)
        return blocks if work < 0.8 * np.prod(self.dims) else None

    def tensor(self, flat: torch.Tensor) -> EquivariantTensor:
        blocks = {key: flat[off:off + int(np.prod(shape))].reshape(shape)
                  for key, shape, off in zip(self.keys, self.shapes, self.offsets)}
        return EquivariantTensor(self.legs, blocks)

    def flatten(self, tensor: EquivariantTensor) -> torch.Tensor:
        parts = []
        for key, shape in zip(self.keys, self.shapes):
            block = tensor.blocks.get(key)
            parts.append(torch.zeros(shape, dtype=tensor.dtype, device=tensor.device)
                         if block is None
                         else block.reshape(shape))
        return torch.cat([p.reshape(-1) for p in parts])

    def dense(self, flat: torch.Tensor) -> torch.Tensor:
        """Dense ``(D_left, D_phys, D_right)`` core from the flat coefficients (differentiable)."""
        if self.dense_idx.device != flat.device:  # follow the module to the GPU and back
            self.dense_idx, self.param_idx, self.values = (
                t.to(flat.device) for t in (self.dense_idx, self.param_idx, self.values))
        vals = self.values.to(flat.dtype) * flat[self.param_idx]  # [nnz]
        out = flat.new_zeros(int(np.prod(self.dims)))
        return out.index_add(0, self.dense_idx, vals).reshape(self.dims)


# ------------------------------------------------------------------------------------------
# Pair basis: harmonics, radial functions and their derivatives
# ------------------------------------------------------------------------------------------

@lru_cache(maxsize=16)
def _solid_gradient_matrix(l_max: int) -> torch.Tensor:
    """``G`` with ``∂_a S_lm(x) = Σ_{m'} G[(l-1, m'), (l, m, a)] S_{l-1, m'}(x)``.

    The derivative of a harmonic homogeneous polynomial of degree ``l`` is one of degree
    ``l - 1``, so it lies exactly in the span of the ``S_{l-1, m'}``; the coefficients are
    solved for on random points (exact up to round-off, which is checked).
    Returns ``(l_max², (l_max+1)² · 3)`` float64.
    """
    n_y = (l_max + 1) ** 2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8 * n_y + 16, 3, generator=g, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        s = solid_harmonics(x, l_max)  # [K, n_y]
    low = s.detach()[:, :l_max ** 2]  # [K, l_max^2]
    out = torch.zeros(l_max ** 2, n_y, 3, dtype=torch.float64)
    for l in range(1, l_max + 1):
        basis = low[:, (l - 1) ** 2:l ** 2]  # [K, 2l-1]
        for k in range(l * l, (l + 1) ** 2):
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(s[:, k].sum(), x, retain_graph=True)  # [K, 3]
            coef = torch.linalg.lstsq(basis, grad).solution  # [2l-1, 3]
            residual = (basis @ coef - grad).abs().max()
            if residual > 1e-9 * max(1.0, float(grad.abs().max())):
                raise ArithmeticError(f"gradient of S_{l} not in the span of S_{l - 1}")
            out[(l - 1) ** 2:l ** 2, k] = coef
    return out.reshape(l_max ** 2, n_y * 3)


def harmonics_with_gradient(vectors: torch.Tensor, l_max: int, gradient: bool = True
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Real spherical harmonics of the directions of ``vectors`` and their Cartesian gradients.

    Parameters
    ----------
    vectors : (P, 3) nonzero vectors, Å.
    l_max : largest angular momentum.
    gradient : also return ``∇_r Y_lm(r/|r|)``.

    Returns
    -------
    Y : (P, (l_max+1)²), same layout as :func:`entangle.so3.real_spherical_harmonics`.
    dY : (P, (l_max+1)², 3) in Å⁻¹, or None.

    >>> v = torch.tensor([[0.3, -1.2, 0.7]], dtype=torch.float64)
    >>> y, dy = harmonics_with_gradient(v, 2)
    >>> bool(torch.allclose(torch.einsum("pka,pa->pk", dy, v), torch.zeros(1, 9, dtype=v.dtype)))
    True
    """
    y = real_spherical_harmonics(vectors, l_max)  # [P, n_y]
    if not gradient:
        return y, None
    n_p, n_y = y.shape
    if l_max == 0:
        return y, y.new_zeros(n_p, 1, 3)
    r = vectors.norm(dim=-1, keepdim=True)  # [P, 1]
    unit = vectors / r  # [P, 3]
    g = _solid_gradient_matrix(l_max).to(dtype=y.dtype, device=y.device)  # [l_max², n_y*3]
    degree = torch.cat([torch.full((2 * l + 1,), float(l), dtype=y.dtype, device=y.device)
                        for l in range(l_max + 1)])  # [n_y]
    dy = (y[:, :l_max ** 2] @ g).view(n_p, n_y, 3)  # [P, n_y, 3]: ∇S_lm at the unit vector
    dy = dy - (y * degree)[:, :, None] * unit[:, None, :]
    return y, dy / r[:, :, None]


def chebyshev_radial(r: torch.Tensor, n_rad: int, r_min: float, r_cut: float,
                     derivative: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chebyshev radial functions with the MTP cutoff (App. C.1) and their ``r`` derivatives.

    ``Q_μ(r) = T_μ(ξ) ((r_cut - r)/(r_cut - r_min))²`` for ``r < r_cut`` (0 beyond), with
    ``ξ = (2r - r_min - r_cut)/(r_cut - r_min)``; ``μ = 0..n_rad-1``.

    Returns ``Q: (P, n_rad)`` and ``dQ/dr: (P, n_rad)`` in Å⁻¹ (or None).
    """
    width = r_cut - r_min
    xi = (2.0 * r - (r_min + r_cut)) / width  # [P]
    gap = torch.clamp(r_cut - r, min=0.0) / width  # [P]
    if torch.is_grad_enabled() and r.requires_grad:  # differentiable (no in-place writes)
        two_xi = 2.0 * xi
        t = [torch.ones_like(xi), xi]  # T_0, T_1
        for _ in range(2, n_rad):
            t.append(torch.addcmul(-t[-2], two_xi, t[-1]))  # T_{k+1} = 2ξ T_k - T_{k-1}
        t = torch.stack(t[:n_rad])  # [n_rad, P]: rows are contiguous
        q = t * (gap * gap)  # [n_rad, P]
        if not derivative:
            return q.T, None  # [P, n_rad] (a transposed view)
        # T_μ' = μ U_{μ-1}; U_0 = 1, U_1 = 2ξ, U_n = 2ξ U_{n-1} - U_{n-2}
        u = [torch.zeros_like(xi), torch.ones_like(xi), two_xi]  # U_{-1} := 0, U_0, U_1
        for _ in range(3, n_rad):
            u.append(torch.addcmul(-u[-2], two_xi, u[-1]))
        order = torch.arange(n_rad, dtype=r.dtype, device=r.device)[:, None] * (2.0 / width)
        dq = torch.stack(u[:n_rad]) * order * (gap * gap) - t * (2.0 * gap / width)
        return q.T, dq.T
    two_xi = 2.0 * xi  # the same arithmetic, rows written in place (fewer temporaries)
    t = xi.new_empty(n_rad, xi.shape[0])  # [n_rad, P]: rows are contiguous, written in place
    t[0] = 1.0  # T_0
    if n_rad > 1:
        t[1] = xi  # T_1
    for k in range(2, n_rad):
        torch.addcmul(-t[k - 2], two_xi, t[k - 1], out=t[k])  # T_k = 2ξ T_{k-1} - T_{k-2}
    gap2 = gap * gap
    q = t * gap2  # [n_rad, P]
    if not derivative:
        return q.T, None  # [P, n_rad] (a transposed view)
    # T_μ' = μ U_{μ-1}; U_0 = 1, U_1 = 2ξ, U_n = 2ξ U_{n-1} - U_{n-2}
    u = torch.empty_like(t)  # row μ: U_{μ-1}, with U_{-1} := 0
    u[0] = 0.0
    if n_rad > 1:
        u[1] = 1.0
    if n_rad > 2:
        u[2] = two_xi
    for k in range(3, n_rad):
        torch.addcmul(-u[k - 2], two_xi, u[k - 1], out=u[k])
    order = torch.arange(n_rad, dtype=r.dtype, device=r.device)[:, None] * (2.0 / width)
    dq = u.mul_(order).mul_(gap2).sub_(t.mul_(2.0 * gap / width))  # [n_rad, P]
    return q.T, dq.T  # [P, n_rad] each (transposed views)


@dataclass
class ETNGeometry:
    """What an ETN needs from a batch, independent of its parameters (reusable in training).

    Attributes
    ----------
    species : (N,) species index of each atom.
    atom_structure : (N,) structure of each atom; n_structures : B.
    centers, neighbors : (P,) atoms ``i`` and ``j`` of each pair within ``r_cut``.
    rows : (P,) ``N_spec² i + t`` with ``t = N_spec s_i + s_j`` the species pair.
    pair_structure : (P,) structure of each pair.
    vectors : (P, 3) ``r_ij``, Å.
    descriptors : one matrix per ``l``, ``(N (2l+1), N_spec² N_rad(l))``: the features
        ``F[i, m, t, μ] = Σ_{j: t_ij = t} Y_lm(r̂_ij) Q_μ(r_ij)`` of eq. (38) (the species
        one-hot vectors ``z^i, z^j`` folded into ``t``).
    jacobian : (P, K, 3) ``∂(Y_lm Q_μ)/∂r_ij`` in Å⁻¹, ``K = Σ_l (2l+1) N_rad(l)`` in
        ``(l, m, μ)`` order, or None.
    Y, QdQ, unit, inv_r : for forces without a stored Jacobian (else None): harmonics
        ``(P, (l_max+1)²)``; ``Q_μ`` and ``dQ_μ/dr`` (Å⁻¹) stacked, ``(P, 2, N_rad)``;
        ``r̂`` ``(P, 3)``; ``1/r`` ``(P,)`` in Å⁻¹.
    volume : (B,) Å³ (0 for non-periodic structures).
    """

    species: torch.Tensor
    atom_structure: torch.Tensor
    n_structures: int
    centers: torch.Tensor
    neighbors: torch.Tensor
    rows: torch.Tensor
    pair_structure: torch.Tensor
    vectors: torch.Tensor
    descriptors: list[torch.Tensor]
    jacobian: torch.Tensor | None
    Y: torch.Tensor | None
    QdQ: torch.Tensor | None
    unit: torch.Tensor | None
    inv_r: torch.Tensor | None
    volume: torch.Tensor

    @property
    def n_atoms(self) -> int:
        return int(self.species.shape[0])

    @property
    def has_derivatives(self) -> bool:
        return self.jacobian is not None or self.QdQ is not None


# ------------------------------------------------------------------------------------------
# Tensor-train contraction with its input gradient
# ------------------------------------------------------------------------------------------

_ETT_CHUNK = 2048  # atoms per block without autograd: the per-atom matrices stay in cache


def ett_energy_and_gradient(v: torch.Tensor, cores: Sequence[torch.Tensor],
                            gradient: bool = True,
                            blocks: Sequence[Sequence[CoreBlock] | None] | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-atom ETT values (eq. 34) and their gradients with respect to the input vector.

    Parameters
    ----------
    v : (N, D) input vectors (the same vector enters every physical leg).
    cores : dense cores ``(D_left, D, ..., D, D_right)`` with one physical leg, or two for a
        merged two-site core; the first has ``D_left = 1``, the last ``D_right = 1``.
    gradient : also return ``∂E_i/∂v_i``.
    blocks : per core, its nonzero blocks (``_CoreLayout.blocks``) or ``None`` (dense); the
        blocked contraction skips the zeros that the triangle and parity rules put in a dense
        equivariant core (about 60 % of a middle core's work at ``L = 4, 5``).

    Returns
    -------
    energy : (N,); grad : (N, D) or None.

    Each core applied to ``v`` is a matrix per atom, ``M_k = Σ_b T^k[:, b, :] v_b`` (one matrix
    product for all atoms); the energy is the product ``M_1 ⋯ M_d`` (right to left, Algorithm 1,
    with the unnatural-parity bond sectors in the role of Algorithm 2's imaginary parts) and the
    gradient ``Σ_k L_{k-1}ᵀ T^k R_{k+1}``, one more matrix product per core with the outer
    products of the left and right environments. Without autograd, atoms are processed in
    blocks of 2,048.
    """
    n = v.shape[0]
    blocks = [None] * len(cores) if blocks is None else blocks
    if len(blocks) != len(cores):
        raise ConfigError(f"{len(blocks)} block plans for {len(cores)} cores")
    if n > _ETT_CHUNK and not torch.is_grad_enabled():
        parts = [_ett(v[start:start + _ETT_CHUNK], cores, gradient, blocks)
                 for start in range(0, n, _ETT_CHUNK)]
        return (torch.cat([p[0] for p in parts]),
                torch.cat([p[1] for p in parts]) if gradient else None)
    return _ett(v, cores, gradient, blocks)


def _block_matrices(core: torch.Tensor, blocks: Sequence[CoreBlock]) -> list[torch.Tensor]:
    """Each block of ``core`` as a ``(n_phys, rows x cols)`` matrix."""
    return [core[b.rows, :, b.cols].index_select(1, b.phys).transpose(0, 1).flatten(1)
            for b in blocks]


def _ett(v: torch.Tensor, cores: Sequence[torch.Tensor], gradient: bool,
         blocks: Sequence[Sequence[CoreBlock] | None]
         ) -> tuple[torch.Tensor, torch.Tensor | None]:
    n, dim = v.shape
    block_mats = [None if b is None else _block_matrices(c, b) for c, b in zip(cores, blocks)]
    mats: list[Any] = []  # per core: [N, Dl, Dr], or its nonzero blocks [N, rows, cols]
    for core, plan, bmats in zip(cores, blocks, block_mats):
        dl, dr = core.shape[0], core.shape[-1]
        if plan is not None:
            m = [(v.index_select(1, b.phys) @ mat).view(n, len(b.row_idx), len(b.col_idx))
                 for b, mat in zip(plan, bmats)]
        elif core.dim() == 3:
            m = (v @ core.transpose(0, 1).reshape(dim, dl * dr)).view(n, dl, dr)  # [N, Dl, Dr]
        elif core.dim() == 4:
            x = (v @ core.transpose(0, 1).reshape(dim, dl * dim * dr)).view(n, dl, dim, dr)
            m = (x * v[:, None, :, None]).sum(dim=2)  # [N, Dl, Dr]
        else:
            raise ConfigError(f"cores need 1 or 2 physical legs, got {core.dim() - 2}")
        mats.append(m)
    rights = [v.new_ones(n, 1)]  # rights[k]: cores k.. contracted, after the reverse below
    for k in reversed(range(len(cores))):
        rights.append(_matvec(mats[k], blocks[k], rights[-1], cores[k].shape[0]))  # [N, Dl]
    rights.reverse()
    energy = rights[0][:, 0]  # [N]
    if not gradient:
        return energy, None
    grad = None
    left = v.new_ones(n, 1)  # [N, 1]
    for k, core in enumerate(cores):
        dl, dr = core.shape[0], core.shape[-1]
        if blocks[k] is not None:  # the outer products of the environments, block by block
            z = v.new_zeros(n, dim)
            for b, mat in zip(blocks[k], block_mats[k]):
                outer = left[:, b.rows, None] * rights[k + 1][:, None, b.cols]
                z = z.index_add(1, b.phys, outer.view(n, -1) @ mat.T)
        else:
            outer = (left[:, :, None] * rights[k + 1][:, None, :]).view(n, dl * dr)  # [N, Dl Dr]
            if core.dim() == 3:
                z = outer @ core.permute(0, 2, 1).reshape(dl * dr, dim)  # [N, D]
            else:
                w = (outer @ core.permute(0, 3, 1, 2).reshape(dl * dr, dim * dim)).view(
                    n, dim, dim)
                z = (w * v[:, None, :]).sum(dim=2) + (w * v[:, :, None]).sum(dim=1)  # [N, D]
        grad = z if grad is None else grad + z
        left = _vecmat(left, mats[k], blocks[k], core.shape[-1])  # [N, Dr]
    return energy, grad


def _matvec(m: Any, blocks: Sequence[CoreBlock] | None, r: torch.Tensor, rows: int
            ) -> torch.Tensor:
    """``Σ_j m[:, i, j] r[:, j]`` for a dense ``m: (N, rows, Dr)`` or its blocks."""
    if blocks is None:
        return torch.bmm(m, r.unsqueeze(2)).squeeze(2)
    out = r.new_zeros(r.shape[0], rows)
    for b, y in zip(blocks, m):
        out = out.index_add(1, b.row_idx, torch.bmm(y, r[:, b.cols].unsqueeze(2)).squeeze(2))
    return out


def _vecmat(l: torch.Tensor, m: Any, blocks: Sequence[CoreBlock] | None, cols: int
            ) -> torch.Tensor:
    """``Σ_i l[:, i] m[:, i, j]`` for a dense ``m: (N, Dl, cols)`` or its blocks."""
    if blocks is None:
        return torch.bmm(l.unsqueeze(1), m).squeeze(1)
    out = l.new_zeros(l.shape[0], cols)
    for b, y in zip(blocks, m):
        out = out.index_add(1, b.col_idx, torch.bmm(l[:, b.rows].unsqueeze(1), y).squeeze(1))
    return out


# ------------------------------------------------------------------------------------------
# The potential
# ------------------------------------------------------------------------------------------

@register_model
class ETNPotential(nn.Module):
    """Equivariant tensor network potential (see the module docstring for the physics).

    Parameters
    ----------
    config : ETNConfig

    Examples
    --------
    >>> import numpy as np
    >>> from entangle.data import Structure
    >>> model = ETNPotential(ETNConfig(species=[29], n_rad=4, d=2, L=2, r_cut=4.0))
    >>> s = Structure(positions=np.zeros((1, 3)), numbers=[29], cell=3.6 * np.eye(3), pbc=True)
    >>> out = model.predict(s)
    >>> out["forces"].shape
    (1, 3)
    """

    def __init__(self, config: ETNConfig):
        super().__init__()
        self.config = config
        dtype = DTYPES[config.dtype]
        ch = etn_channels(config)
        self.l_max = config.L - 1
        self.n_species = len(config.species)
        self.channels = ch
        g = torch.Generator().manual_seed(config.seed)
        s = self.n_species
        # feature contractions A_l, B_l (Table 1), shared by all cores
        self.A = nn.ParameterList([
            nn.Parameter(torch.randn(ch["spec_rank"][l], s, s, generator=g, dtype=torch.float64))
            for l in range(config.L)])
        self.B = nn.ParameterList([
            nn.Parameter(torch.randn(ch["rad_rank"][l], ch["n_rad"][l], ch["spec_rank"][l],
                                     generator=g, dtype=torch.float64)
                         / math.sqrt(ch["n_rad"][l] * ch["spec_rank"][l]))
            for l in range(config.L)])
        # input sectors: (1, v) in the l = 0 block (Remark 4)
        n_in = [ch["rad_rank"][l] + (1 if l == 0 else 0) for l in range(config.L)]
        self.phys = Sectors.natural(n_in)
        self.layouts = [_CoreLayout(legs) for legs in _core_legs(config, self.phys)]
        self.cores = nn.ParameterList()
        for layout in self.layouts:
            fan = max(1, sum(int(np.prod(shape[1:])) for shape in layout.shapes)
                      // max(1, layout.legs[0].dim))
            self.cores.append(nn.Parameter(
                config.init_scale * torch.randn(layout.size, generator=g, dtype=torch.float64)
                / math.sqrt(fan)))
        # start near the multilinear model's non-degenerate point: the scalar path through the
        # constant input channel (Remark 4) is 1 in every core, so E_i = 1 + O(init_scale)
        # and every core gets a nonzero gradient (a product of random cores sits near the
        # saddle at zero); the 1 eV per atom is taken off the reference energies
        for layout, flat in zip(self.layouts, self.cores):
            if _SCALAR_KEY in layout.keys:
                with torch.no_grad():
                    flat[layout.offsets[layout.keys.index(_SCALAR_KEY)]] = 1.0
        energies = torch.tensor(config.reference_energies, dtype=torch.float64) - 1.0
        if config.train_reference:
            self.reference = nn.Parameter(energies)
        else:
            self.register_buffer("reference", energies)
        table = torch.full((119,), -1, dtype=torch.int64)
        table[torch.tensor(config.species)] = torch.arange(s)
        self.register_buffer("species_table", table, persistent=False)
        self._build_feature_maps()
        # descriptor standardisation (:meth:`standardize`); identity until fitted to data
        n_types = s * s
        self.register_buffer("type_center", torch.arange(n_types) // s, persistent=False)
        self.register_buffer("descriptor_shift",
                             torch.zeros(n_types * ch["n_rad"][0], dtype=torch.float64))
        self.register_buffer("descriptor_scale",
                             torch.ones(n_types * sum(ch["n_rad"]), dtype=torch.float64))
        self.to(dtype)

    def _build_feature_maps(self) -> None:
        """Block offsets of the feature layout ``(l, m, λ)`` and the descriptor layout
        ``(l, m, μ)``, and the constant maps of the harmonic gradients."""
        self._blocks: list[tuple[int, int, int, slice, slice]] = []  # l, n_rad, rank, v, K
        start_v = start_k = 0
        for l in range(self.config.L):
            n_rad, rank = self.channels["n_rad"][l], self.channels["rad_rank"][l]
            size_v, size_k = (2 * l + 1) * rank, (2 * l + 1) * n_rad
            self._blocks.append((l, n_rad, rank, slice(start_v, start_v + size_v),
                                 slice(start_k, start_k + size_k)))
            start_v, start_k = start_v + size_v, start_k + size_k
        self.n_descriptor = start_k
        to_harmonic = torch.zeros(start_k, (self.l_max + 1) ** 2, dtype=torch.float64)
        for l, n_rad, _, _, ks in self._blocks:  # column (l, m, μ) -> harmonic l² + m
            rows = torch.arange(ks.start, ks.stop)
            to_harmonic[rows, l * l + (rows - ks.start) // n_rad] = 1.0
        self.register_buffer("descriptor_to_harmonic", to_harmonic, persistent=False)
        n_y = (self.l_max + 1) ** 2
        # (n_y, 3 l_max²): h_y -> Σ_lm h_y[lm] ∂_a S_lm as coefficients of Y_{l-1,m'}
        grad = _solid_gradient_matrix(self.l_max).reshape(self.l_max ** 2, n_y, 3)
        self.register_buffer("harmonic_gradient",
                             grad.permute(1, 2, 0).reshape(n_y, 3 * self.l_max ** 2).clone(),
                             persistent=False)
        degree = torch.tensor([float(l) for l in range(self.l_max + 1) for _ in range(2 * l + 1)],
                              dtype=torch.float64)
        self.register_buffer("harmonic_degree", degree, persistent=False)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_config(cls, config: ETNConfig | dict[str, Any]) -> ETNPotential:
        """Rebuild from an :class:`ETNConfig` or its ``dataclasses.asdict`` form."""
        if isinstance(config, dict):
            names = {f.name for f in dataclasses.fields(ETNConfig)}
            unknown = set(config) - names
            if unknown:
                raise ConfigError(f"unknown ETN config keys: {sorted(unknown)}")
            config = ETNConfig(**config)
        return cls(config)

    @property
    def dtype(self) -> torch.dtype:
        return self.cores[0].dtype

    # ------------------------------------------------------------------ parameters
    def n_parameters(self, include_reference: bool = True) -> int:
        """Number of fitted coefficients (``#θ`` of eq. 49)."""
        n = sum(p.numel() for p in self.A) + sum(p.numel() for p in self.B)
        n += sum(p.numel() for p in self.cores)
        if include_reference and self.config.train_reference:
            n += self.reference.numel()
        return n

    def core_tensor(self, k: int) -> EquivariantTensor:
        """Core ``k`` as an :class:`EquivariantTensor` (views of the parameters)."""
        return self.layouts[k].tensor(self.cores[k])

    def set_core(self, k: int, tensor: EquivariantTensor) -> None:
        """Replace core ``k`` (its bond multiplicities may change, e.g. after QR or SVD)."""
        if tensor.legs != self.layouts[k].legs:
            if tensor.legs[1] != self.phys:
                raise ConfigError("a core's physical leg cannot change")
            self.layouts[k] = _CoreLayout(tensor.legs)
            self.config.bonds = [[list(b) for b in layout.legs[2].blocks]
                                 for layout in self.layouts[:-1]]
        flat = self.layouts[k].flatten(tensor).detach().to(self.cores[k].dtype)
        self.cores[k] = nn.Parameter(flat)

    def check_embeddable(self, other: ETNPotential) -> None:
        """Raise :class:`ConfigError` naming the mismatch if :meth:`embed` cannot take ``other``."""
        mine, theirs = self.config, other.config
        for name in ("species", "r_cut", "r_min", "feature_scale"):
            if getattr(mine, name) != getattr(theirs, name):
                raise ConfigError(f"cannot embed an ETN with {name}={getattr(theirs, name)!r} "
                                  f"into one with {name}={getattr(mine, name)!r}")
        for name in ("d", "L"):
            if getattr(theirs, name) > getattr(mine, name):
                raise ConfigError(f"cannot embed an ETN with {name}={getattr(theirs, name)} "
                                  f"into one with {name}={getattr(mine, name)}")
        for name, small in other.channels.items():
            big = self.channels[name]
            if any(a > b for a, b in zip(small, big)):
                raise ConfigError(f"cannot embed an ETN with {name} {small} per l into one "
                                  f"with {name} {big}")
        for k, (old, new) in enumerate(zip(other.layouts, self.layouts)):
            for key, shape in zip(old.keys, old.shapes):
                target = new.shapes[new.keys.index(key)] if key in new.keys else None
                if target is None or any(a > b for a, b in zip(shape, target)):
                    raise ConfigError(f"core {k}: block {key} of shape {shape} "
                                      "does not fit this ETN's bonds")
        for k in range(theirs.d, mine.d):
            if _SCALAR_KEY not in self.layouts[k].keys:
                raise ConfigError(f"core {k} has no scalar (l = 0, even) bond sector to pass "
                                  "the smaller ETN's value through")

    @torch.no_grad()
    def embed(self, other: ETNPotential, padding_scale: float = 0.01) -> None:
        """Start from a trained, smaller ETN: this model then computes ``other``'s energies.

        ``other`` must have the same species, radial interval and ``feature_scale``, and at
        most this model's ``d``, ``L`` and channels per ``l`` (radial functions, species and
        radial ranks, bond channels of every sector; :meth:`check_embeddable`). Its
        coefficients fill the leading corner of every block (``A_l``, ``B_l``, its ``d``
        cores), its reference energies and descriptor standardisation are copied, so call
        :meth:`standardize` first (it sets the new channels). Extra cores pass the value
        through: their scalar path (constant input channel, Remark 4) is 1, which multiplies
        the old last core's output in bond channel ``(l=0, 0)``. New ``B_l`` entries that feed
        the old features are zero, the other new ``A_l``, ``B_l`` entries keep their random
        start, and the new core entries this model's random start times ``padding_scale`` (new
        bond channels must not sit at the zero saddle). ``padding_scale=0`` reproduces
        ``other`` to rounding; the default changes energies by ~1e-4 eV per atom. Nothing
        changes if ``other`` does not fit.
        """
        if not 0 <= padding_scale < math.inf:
            raise ConfigError(f"padding_scale must be finite and >= 0, got {padding_scale}")
        self.check_embeddable(other)
        theirs = other.config
        old_cores = [layout.tensor(flat) for layout, flat in zip(other.layouts, other.cores)]
        new_cores = [layout.tensor(flat) for layout, flat in zip(self.layouts, self.cores)]

        def corner(new: torch.Tensor, old: torch.Tensor) -> None:
            new[tuple(slice(0, n) for n in old.shape)] = old.to(new)  # dtype and device

        for l in range(theirs.L):  # new species and radial channels keep their random start
            corner(self.A[l], other.A[l])
            self.B[l][:other.B[l].shape[0]].zero_()  # old features see only the old channels
            corner(self.B[l], other.B[l])
        for flat in self.cores:
            flat.mul_(padding_scale)  # the blocks of ``new_cores`` are views of ``flat``
        for old, new in zip(old_cores, new_cores):
            for key, block in old.blocks.items():
                corner(new.blocks[key], block)
        for k in range(theirs.d, self.config.d):
            new_cores[k].blocks[_SCALAR_KEY][0, 0, 0] = 1.0  # coupling(0, 0, 0) = 1
        self.reference.copy_(other.reference)
        start_new = start_old = 0
        n_types = self.n_species ** 2
        for l in range(self.config.L):
            size = n_types * self.channels["n_rad"][l]
            if l < theirs.L:
                n_old = other.channels["n_rad"][l]
                scale = self.descriptor_scale[start_new:start_new + size].view(n_types, -1)
                corner(scale, other.descriptor_scale[start_old:start_old + n_types * n_old
                                                     ].view(n_types, n_old))
                if l == 0:
                    corner(self.descriptor_shift.view(n_types, -1),
                           other.descriptor_shift.view(n_types, n_old))
                start_old += n_types * n_old
            start_new += size

    def core_blocks(self) -> list[list[CoreBlock] | None]:
        """The nonzero blocks of each dense core (``None``: contracted densely).

        CPU only: on a GPU the many small block products cost more in kernel launches than
        the zeros they skip (H100: 2-4x slower training steps at ``L = 5``, see BENCHMARKS.md).
        """
        if self.cores[0].device.type != "cpu":
            return [None] * len(self.layouts)
        return [layout.blocks for layout in self.layouts]

    def dense_cores(self) -> list[torch.Tensor]:
        """Dense ``(D_left, D_phys, D_right)`` tensors of all cores (differentiable)."""
        return [layout.dense(flat) for layout, flat in zip(self.layouts, self.cores)]

    # ------------------------------------------------------------------ geometry
    def species_index(self, numbers: torch.Tensor) -> torch.Tensor:
        """Species index of atomic numbers; raises :class:`DataError` for unknown species."""
        idx = self.species_table[numbers.clamp(0, 118)]
        if bool((idx < 0).any()):
            bad = sorted({int(z) for z in numbers[idx < 0].tolist()})
            raise DataError(f"atomic numbers {bad} are not among the species this ETN was "
                            f"trained on ({self.config.species})", field="numbers")
        return idx

    @torch.no_grad()
    def geometry(self, batch: AtomsBatch, neighbours: Neighbours, derivatives: bool = True,
                 jacobian: bool = False) -> ETNGeometry:
        """Parameter-independent pair quantities of ``batch`` (see :class:`ETNGeometry`).

        Parameters
        ----------
        batch, neighbours : the structures and a neighbour list with cutoff ``>= r_cut``
            (pairs beyond ``r_cut`` are dropped).
        derivatives : keep what forces and stress need.
        jacobian : with ``derivatives``, store the ``(P, K, 3)`` pair Jacobian (more memory;
            every evaluation is then a few matrix products: the fast path for training).
        """
        c = self.config
        if neighbours.cutoff < c.r_cut * (1 - 1e-12):
            raise ConfigError(f"neighbour list cutoff {neighbours.cutoff} Å is below the "
                              f"model's r_cut {c.r_cut} Å")
        dtype = self.dtype
        species = self.species_index(batch.numbers)  # [N]
        vectors = pair_vectors(batch.positions.to(dtype), batch.cell.to(dtype), neighbours)
        centers, nbrs, structure = neighbours.centers, neighbours.neighbors, neighbours.structure
        r = vectors.norm(dim=-1)  # [P]
        if neighbours.cutoff > c.r_cut:
            keep = torch.nonzero(r < c.r_cut).squeeze(1)  # [P']
            vectors, r = vectors[keep], r[keep]
            centers, nbrs, structure = centers[keep], nbrs[keep], structure[keep]
        n_types = self.n_species ** 2
        rows = centers * n_types + species[centers] * self.n_species + species[nbrs]  # [P]
        n_atoms, n_pairs = int(species.shape[0]), int(r.shape[0])
        with_jacobian = derivatives and jacobian
        y, dy = harmonics_with_gradient(vectors, self.l_max, gradient=with_jacobian)
        q, dq = chebyshev_radial(r, c.n_rad, c.r_min, c.r_cut, derivative=derivatives)
        unit = vectors / r[:, None] if derivatives else None  # [P, 3]
        on_the_fly = derivatives and not jacobian
        descriptors, jac = [], []
        for l, n_rad, _, _, _ in self._blocks:
            y_l, q_l = y[:, l * l:(l + 1) ** 2], q[:, :n_rad]  # [P, 2l+1], [P, n_rad]
            prod = (y_l[:, :, None] * q_l[:, None, :]).reshape(n_pairs, (2 * l + 1) * n_rad)
            acc = prod.new_zeros(n_atoms * n_types, prod.shape[1]).index_add(0, rows, prod)
            descriptors.append(acc.view(n_atoms, n_types, 2 * l + 1, n_rad).transpose(1, 2)
                               .reshape(n_atoms * (2 * l + 1), n_types * n_rad))
            if with_jacobian:  # ∂(Y Q)/∂r = ∇Y Q + Y Q' r̂
                dy_l = dy[:, l * l:(l + 1) ** 2].permute(2, 0, 1)  # [3, P, 2l+1]
                part = dy_l[:, :, :, None] * q_l[None, :, None, :] + (
                    unit.T[:, :, None, None] * (y_l[:, :, None] * dq[:, None, :n_rad])[None])
                jac.append(part.reshape(3, n_pairs, (2 * l + 1) * n_rad))  # [3, P, (2l+1) n_rad]
        cell = batch.cell.to(dtype)
        volume = torch.where(batch.pbc.all(dim=1), torch.linalg.det(cell).abs(),
                             torch.zeros((), dtype=dtype))  # [B]
        return ETNGeometry(
            species=species, atom_structure=batch.batch, n_structures=batch.n_structures,
            centers=centers, neighbors=nbrs, rows=rows, pair_structure=structure,
            vectors=vectors, descriptors=descriptors,
            jacobian=torch.cat(jac, dim=2).permute(1, 2, 0).contiguous() if with_jacobian
            else None,  # [P, K, 3]
            Y=y if on_the_fly else None,
            QdQ=torch.stack([q, dq], dim=1) if on_the_fly else None,  # [P, 2, N_rad]
            unit=unit if on_the_fly else None,
            inv_r=1.0 / r if on_the_fly else None, volume=volume)

    # ------------------------------------------------------------------ features
    def radial_tables(self) -> list[torch.Tensor]:
        """``W_l[t, μ, λ] = Σ_κ B_l[λ, μ, κ] A_l[κ, t] / σ_l[t, μ]`` per ``l``,
        ``(N_spec², N_rad(l), N_rad_rank(l))``: the species and radial contractions of
        Table 1 fused into one matrix per ``l`` (``σ``: descriptor scales, :meth:`standardize`)."""
        s2 = self.n_species ** 2
        tables, start = [], 0
        for l in range(self.config.L):
            n_rad = self.channels["n_rad"][l]
            w = torch.einsum("lmk,kt->tml", self.B[l],
                             self.A[l].reshape(self.A[l].shape[0], s2))  # [t, N_rad(l), rank]
            scale = self.descriptor_scale[start:start + s2 * n_rad].view(s2, n_rad, 1)
            tables.append(w / scale)
            start += s2 * n_rad
        return tables

    @torch.no_grad()
    def standardize(self, geometries: Sequence[ETNGeometry]) -> None:
        """Fit the descriptor standardisation to data (before training).

        The ``l = 0`` descriptors ``F_0[i, t, μ]`` are shifted by their mean and divided by
        their standard deviation over the atoms of the centre species of ``t``; the ``l > 0``
        ones are divided by the root mean square of their norm ``(Σ_m F²)^{1/2}`` (a shift
        would break equivariance). An affine change of the invariant inputs leaves the
        model class (polynomials of degree ``d`` in ``v``) unchanged but makes the inputs
        ``O(1)`` with ``O(1)`` variation: without it the ``l > 0`` features of near-symmetric
        environments are ~1e-4 and the fit is badly conditioned. Channels never seen keep
        shift 0 and scale 1.
        """
        n_types = self.n_species ** 2
        scales = []
        on = {"dtype": torch.float64, "device": self.descriptor_scale.device}
        for l, n_rad, _, _, _ in self._blocks:
            s1 = torch.zeros(n_types, n_rad, **on)
            s2 = torch.zeros(n_types, n_rad, **on)
            count = torch.zeros(n_types, 1, **on)
            for geom in geometries:
                f = geom.descriptors[l].double().view(geom.n_atoms, 2 * l + 1, n_types, n_rad)
                own = (geom.species[:, None] == self.type_center[None, :]).double()  # [N, T]
                s1 += torch.einsum("it,itu->tu", own, f.sum(dim=1))
                s2 += torch.einsum("it,imtu->tu", own, f * f)
                count += own.sum(dim=0)[:, None]
            seen = count > 0  # [T, 1]
            mean = torch.where(seen, s1 / count.clamp(min=1), 0.0)  # [T, n_rad]
            second = torch.where(seen, s2 / count.clamp(min=1), 0.0)  # [T, n_rad]
            if l == 0:
                self.descriptor_shift.copy_(mean.reshape(-1))
                second = (second - mean * mean).clamp(min=0.0)  # variance
            scale = second.sqrt()  # [T, n_rad]
            scale = torch.where(scale > 1e-12 * scale.max().clamp(min=1e-300), scale, 1.0)
            scales.append(scale.reshape(-1))
        self.descriptor_scale.copy_(torch.cat(scales))

    def features(self, geom: ETNGeometry) -> torch.Tensor:
        """Input vectors ``(1, v)`` of the ETT (eqs. 38, 43), ``(N, D_phys)``."""
        return self._features(geom, self.radial_tables())

    def _features(self, geom: ETNGeometry, tables: list[torch.Tensor]) -> torch.Tensor:
        n = geom.n_atoms
        blocks = [torch.ones(n, 1, dtype=self.dtype, device=geom.species.device)]
        for (l, _, rank, _, _), f, w in zip(self._blocks, geom.descriptors, tables):
            v_l = f @ w.reshape(-1, rank)  # [N (2l+1), rank]: one matrix product per l
            if l == 0:  # centring of the invariant descriptors of the atom's own species
                shift = self.descriptor_shift.view(w.shape[0], w.shape[1], 1)
                own = geom.species[:, None] == self.type_center[None, :]  # [N, T]
                v_l = v_l - own.to(w.dtype) @ (shift * w).sum(dim=1)  # [N, rank]
            blocks.append(v_l.view(n, (2 * l + 1) * rank) / self.config.feature_scale)
        return torch.cat(blocks, dim=1)  # [N, D], layout (l, m, λ) after the constant

    def contract(self, v: torch.Tensor, cores: Sequence[torch.Tensor] | None = None
                 ) -> torch.Tensor:
        """Per-atom ETT energies (eq. 34) of inputs ``v: (N, D_phys)`` -> ``(N,)``.

        ``cores`` are dense cores (default: this model's), see :func:`ett_energy_and_gradient`.
        """
        blocks = self.core_blocks() if cores is None else None
        cores = self.dense_cores() if cores is None else cores
        return ett_energy_and_gradient(v, cores, gradient=False, blocks=blocks)[0]

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, geom: ETNGeometry, *, forces: bool = True, stress: bool = False,
                 cores: Sequence[torch.Tensor] | None = None, reference: bool = True
                 ) -> dict[str, torch.Tensor]:
        """Energies, forces and stress from a precomputed :class:`ETNGeometry`.

        Differentiable with respect to the parameters (and ``cores``) whenever autograd is on.
        """
        if (forces or stress) and not geom.has_derivatives:
            raise ConfigError("forces/stress need a geometry built with derivatives=True")
        blocks = self.core_blocks() if cores is None else None
        cores = self.dense_cores() if cores is None else cores
        tables = self.radial_tables()
        v = self._features(geom, tables)  # [N, D]
        atom_energy, grad = ett_energy_and_gradient(v, cores, gradient=forces or stress,
                                                    blocks=blocks)
        if reference:
            atom_energy = atom_energy + self.reference[geom.species]
        energy = atom_energy.new_zeros(geom.n_structures).index_add(
            0, geom.atom_structure, atom_energy)  # [B]
        out = {"energy": energy, "atom_energy": atom_energy}
        if not (forces or stress):
            return out
        dedr = self._pair_gradient(geom, grad, tables)  # [P, 3]
        if forces:
            out["forces"] = dedr.new_zeros(geom.n_atoms, 3).index_add(
                0, geom.centers, dedr).index_add(0, geom.neighbors, -dedr)  # [N, 3]
        if stress:
            outer = (geom.vectors[:, :, None] * dedr[:, None, :]).reshape(-1, 9)  # [P, 9]
            s = outer.new_zeros(geom.n_structures, 9).index_add(
                0, geom.pair_structure, outer).view(-1, 3, 3)  # [B, 3, 3]
            inv = torch.where(geom.volume > 0, 1.0 / torch.where(geom.volume > 0, geom.volume,
                                                                 1.0), 0.0)  # [B]
            sym = 0.5 * (s + s.transpose(1, 2)) * inv[:, None, None]  # 0 if not periodic
            out["stress"] = torch.stack([sym[:, 0, 0], sym[:, 1, 1], sym[:, 2, 2], sym[:, 1, 2],
                                         sym[:, 0, 2], sym[:, 0, 1]], dim=1)  # [B, 6]
        return out

    def _descriptor_gradient_blocks(self, grad: torch.Tensor, tables: list[torch.Tensor]
                                    ) -> list[torch.Tensor]:
        """``∂E_i/∂F_l[i, t, m, μ]`` from ``∂E_i/∂v_i``, one ``(N N_spec², 2l+1, N_rad(l))``
        tensor per ``l``."""
        n, n_types = grad.shape[0], self.n_species ** 2
        g = grad[:, 1:] / self.config.feature_scale  # [N, D-1]
        parts = []
        for (l, n_rad, rank, vs, _), w in zip(self._blocks, tables):
            g_l = g[:, vs].reshape(n * (2 * l + 1), rank)  # [N (2l+1), rank]
            gf = g_l @ w.reshape(-1, rank).T  # [N (2l+1), T n_rad]
            parts.append(gf.view(n, 2 * l + 1, n_types, n_rad).transpose(1, 2)
                         .reshape(n * n_types, 2 * l + 1, n_rad))
        return parts

    def _descriptor_gradient(self, grad: torch.Tensor, tables: list[torch.Tensor]
                             ) -> torch.Tensor:
        """``∂E_i/∂F[i, t, (l m μ)]`` from ``∂E_i/∂v_i``, ``(N N_spec², K)``."""
        parts = [p.flatten(1) for p in self._descriptor_gradient_blocks(grad, tables)]
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # [N T, K]

    def _pair_gradient(self, geom: ETNGeometry, grad: torch.Tensor,
                       tables: list[torch.Tensor]) -> torch.Tensor:
        """``∂E/∂r_p`` of every pair (module docstring), ``(P, 3)``.

        ``G[p] = ∂E_i/∂F[i, t_p]`` is gathered per pair; with a stored Jacobian
        ``∂E/∂r = J G``. Otherwise, with ``h_y[lm] = Σ_μ G[lmμ] Q_μ`` and
        ``d_y[lm] = Σ_μ G[lmμ] Q'_μ`` (one small matrix product per pair and ``l``):
        ``∂E/∂r = (Σ_{lm} h_y ∇S_lm(r̂) - (Σ_{lm} l h_y Y_lm) r̂) / r + (Σ_{lm} d_y Y_lm) r̂``,
        where ``∇S_lm(r̂)`` is a fixed linear map of the ``Y_{l-1}``.
        """
        if geom.jacobian is not None:  # one (1 x K)(K x 3) product per pair
            gp = self._descriptor_gradient(grad, tables).index_select(0, geom.rows)  # [P, K]
            return torch.bmm(gp[:, None, :], geom.jacobian).squeeze(1)  # [P, 3]
        hd = []
        for (l, n_rad, _, _, _), g_l in zip(self._blocks,
                                             self._descriptor_gradient_blocks(grad, tables)):
            gp_l = g_l.index_select(0, geom.rows)  # [P, 2l+1, N_rad(l)]
            hd.append(torch.bmm(geom.QdQ[:, :, :n_rad], gp_l.transpose(1, 2)))  # [P, 2, 2l+1]
        hd = torch.cat(hd, dim=2) if len(hd) > 1 else hd[0]  # [P, 2, n_y]
        h_y = hd[:, 0]  # [P, n_y]: Σ_μ G Q_μ
        along = (hd[:, 1] * geom.Y).sum(dim=1)  # [P]: Σ G Y Q'
        n_pairs = h_y.shape[0]
        if self.l_max == 0:
            return along[:, None] * geom.unit  # [P, 3]
        n_low = self.l_max ** 2
        spread = (h_y @ self.harmonic_gradient).view(n_pairs, 3, n_low)  # [P, 3, l_max²]
        angular = (spread * geom.Y[:, None, :n_low]).sum(dim=2)  # [P, 3]: Σ h_y ∇S_lm(r̂)
        along = along - (h_y * geom.Y * self.harmonic_degree).sum(dim=1) * geom.inv_r  # [P]
        return angular * geom.inv_r[:, None] + along[:, None] * geom.unit  # [P, 3]

    def forward(self, batch: AtomsBatch, neighbours: Neighbours, *, forces: bool = True,
                stress: bool = False, cores: Sequence[torch.Tensor] | None = None,
                reference: bool = True) -> dict[str, torch.Tensor]:
        """Energies, forces and stress of a batch.

        Parameters
        ----------
        batch : AtomsBatch with ``B`` structures and ``N`` atoms.
        neighbours : pairs of ``batch`` within at least ``config.r_cut``.
        forces, stress : compute ``-∂E/∂x`` (eV/Å) and ``(1/V) ∂E/∂ε`` (eV/Å³, Voigt
            ``xx yy zz yz xz xy``; zero for non-periodic structures).
        cores : replacement dense cores (two-site updates), see :func:`ett_energy_and_gradient`.
        reference : include the per-species reference energies.

        Returns
        -------
        dict with ``energy (B,)`` eV, ``atom_energy (N,)`` eV and, if asked, ``forces (N, 3)``
        and ``stress (B, 6)``; differentiable with respect to the parameters when autograd is
        enabled (run under ``torch.no_grad()`` for plain evaluation).
        """
        geom = self.geometry(batch, neighbours, derivatives=forces or stress)
        return self.evaluate(geom, forces=forces, stress=stress, cores=cores, reference=reference)

    # ------------------------------------------------------------------ convenience
    @torch.no_grad()
    def predict(self, structures: Structure | Sequence[Structure], *, forces: bool = True,
                stress: bool | None = None) -> dict[str, np.ndarray] | list[dict[str, np.ndarray]]:
        """Energy (eV), forces (eV/Å) and, for periodic cells, stress (eV/Å³) as numpy arrays.

        A single :class:`Structure` gives one dict, a sequence a list of dicts.
        """
        single = isinstance(structures, Structure)
        items = [structures] if single else list(structures)
        batch = AtomsBatch.from_structures(items, dtype=self.dtype)
        self.species_index(batch.numbers)
        if stress is None:
            stress = bool(batch.pbc.all())
        nbrs = neighbour_list(batch, self.config.r_cut)
        out = self(batch, nbrs, forces=forces, stress=stress)
        results = []
        ptr = batch.ptr.tolist()
        for k in range(len(items)):
            res = {"energy": float(out["energy"][k])}
            if forces:
                res["forces"] = out["forces"][ptr[k]:ptr[k + 1]].cpu().double().numpy()
            if stress:
                res["stress"] = out["stress"][k].cpu().double().numpy()
            results.append(res)
        return results[0] if single else results
