"""O(3)-equivariant tensors of order 1–3 and their block-wise numerical algebra.

Hodapp & Shapeev, *Equivariant tensor network potentials* (2024), Secs. 3–4 and App. B.

Covariant vectors
-----------------
A covariant vector is a flat array over irreducible blocks ``(l, p, n)`` (:class:`Sectors`): angular momentum
``l``, parity ``p = ±1`` (its sign under inversion ``r -> -r``) and ``n`` channels. The
block of ``(l, p)`` occupies ``(2l + 1) * n`` consecutive entries laid out ``[m, c]`` (``m = -l..l``
major, channel ``c`` minor), ``m`` in the order of :func:`entangle.so3.real_spherical_harmonics`.
Features built from real harmonics ``Y_l`` have *natural* parity ``p = (-1)^l``. Carrying ``p``
explicitly is the real-valued form of the paper's real/imaginary bookkeeping (Sec. 3.4.2,
Algorithms 1–2): an "imaginary" bond of the paper is a bond of unnatural parity here.

Equivariant tensors
-------------------
An order-3 equivariant tensor (eq. 25) is

    T[(l1 m1 n1), (l2 m2 n2), (l3 m3 n3)] = C_{(l1 p1)(l2 p2)(l3 p3)}[n1, n2, n3] W^{l1 l2 l3}[m1, m2, m3]

with one free coefficient block ``C`` per *allowed* sector triple: triangle rule TR(l1, l2, l3)
(eq. 11) and ``p1 p2 p3 = +1`` (invariance under inversion, Sec. 3.4.2). ``W`` is the real
coupling tensor of three real irreps (:func:`coupling`), the real 3j symbol of eq. (10) for
even ``l1 + l2 + l3`` and ``-i`` times it for odd sums, normalised to unit Frobenius norm, so
``sum_{m1 m2} W^{l1 l2 l}[m1, m2, m] W^{l1 l2 l'}[m1, m2, m'] = δ_ll' δ_mm' / (2l + 1)`` (B23).
Order-2 and order-1 tensors are order-3 tensors with one or two trivial legs ``(0, +1, 1)``
(eqs. 26–28).

Block algebra (Sec. 4.2)
------------------------
Contracting two neighbouring cores over a shared bond is, for every bond sector, a product of
two ordinary matrices (:func:`left_matrices`, :func:`right_matrices`, scaled by
``1/sqrt(2l+1)`` so that an orthonormal block matrix means a left-/right-unitary tensor,
eq. 32). QR and SVD therefore act block by block (:func:`orthogonalize_left`,
:func:`orthogonalize_right`, :func:`svd_bond` with Remark 3), and a two-site tensor
(:func:`merge`) is a set of per-sector matrices that :func:`split` factorises again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from entangle.errors import ConfigError, ShapeError
from entangle.so3.irreps import Irreps
from entangle.so3.wigner import real_wigner_3j

__all__ = [
    "Sectors", "EquivariantTensor", "TwoSite", "coupling", "allowed", "triangle",
    "outer", "contract_chain", "left_matrices", "right_matrices", "orthogonalize_left",
    "orthogonalize_right", "svd_bond", "merge", "split", "decay_channels",
]

Sector = tuple[int, int]  # (l, parity)
TRIVIAL_SECTOR: Sector = (0, 1)


def triangle(l1: int, l2: int, l3: int) -> bool:
    """Triangle rule TR(l1, l2, l3) of eq. (11): ``max(l) <= sum of the other two``."""
    return abs(l1 - l2) <= l3 <= l1 + l2


def allowed(s1: Sector, s2: Sector, s3: Sector) -> bool:
    """Whether a coefficient block may be nonzero: TR on the ``l`` and ``p1 p2 p3 = +1``."""
    return triangle(s1[0], s2[0], s3[0]) and s1[1] * s2[1] * s3[1] == 1


# ------------------------------------------------------------------------------------------
# Real coupling tensors
# ------------------------------------------------------------------------------------------

def coupling(l1: int, l2: int, l3: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Real coupling tensor of three real irreps, ``(2l1+1, 2l2+1, 2l3+1)``.

    :func:`entangle.so3.real_wigner_3j`: the real 3j symbol of eq. (10) for even
    ``l1 + l2 + l3`` and its imaginary part for odd sums; invariant under
    ``D_l1 ⊗ D_l2 ⊗ D_l3`` for rotations, unit Frobenius norm, zero unless TR(l1, l2, l3).

    >>> w = coupling(1, 1, 0)
    >>> bool(torch.allclose(w[:, :, 0].abs(), torch.eye(3, dtype=w.dtype) / 3 ** 0.5))
    True
    """
    return real_wigner_3j(l1, l2, l3, dtype=dtype)


# ------------------------------------------------------------------------------------------
# Sectors of a leg
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sectors:
    """The sectors ``(l, p)`` of one tensor leg and their channel counts: ``((l, p, n), ...)``.

    This is the leg/bond bookkeeping of the block algebra below. It carries the same
    information as an :class:`entangle.so3.Irreps` (``n`` copies of ``(l, p)`` per entry) but
    fixes a different memory layout: the block of a sector is ``(2l+1, n)`` with ``m`` major
    (``entangle.so3.Irreps`` blocks are ``(mul, 2l+1)``, channel major), and each sector
    occurs at most once, so a sector is an address. Convert with :meth:`to_irreps` /
    :meth:`from_irreps` (and :meth:`to_irreps_layout` for feature vectors).

    Sectors are kept in the given order (each ``(l, p)`` at most once, ``n >= 1``).

    >>> Sectors.natural([3, 2]).to_irreps()
    Irreps('3x0e+2x1o')
    """

    blocks: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        blocks = tuple((int(l), int(p), int(n)) for l, p, n in self.blocks)
        seen = set()
        for l, p, n in blocks:
            if l < 0 or p not in (1, -1) or n < 1 or (l, p) in seen:
                raise ConfigError(f"invalid sector block {(l, p, n)} in {blocks}")
            seen.add((l, p))
        object.__setattr__(self, "blocks", blocks)

    @classmethod
    def from_irreps(cls, irreps: Irreps | str) -> Sectors:
        """Sectors of an O(3) :class:`entangle.so3.Irreps` (entries of equal ``(l, p)`` merged)."""
        irreps = Irreps(irreps)
        if len(irreps) and not irreps.has_parity:
            raise ConfigError(f"irreps {irreps} have no parity; sectors need O(3) irreps")
        mult: dict[Sector, int] = {}
        for e in irreps:
            if e.mul > 0:
                mult[(e.l, e.p)] = mult.get((e.l, e.p), 0) + e.mul
        return cls(tuple((l, p, n) for (l, p), n in mult.items()))

    def to_irreps(self) -> Irreps:
        """The same multiplicities as an :class:`entangle.so3.Irreps` (one entry per sector)."""
        return Irreps([(n, l, p) for l, p, n in self.blocks])

    def to_irreps_layout(self, x: torch.Tensor) -> torch.Tensor:
        """Re-order a flat vector ``(..., dim)`` from this (m-major) layout to the channel-major
        layout of :meth:`to_irreps`."""
        return torch.cat([self.block(x, (l, p)).transpose(-1, -2).flatten(-2)
                          for l, p, _ in self.blocks], dim=-1)

    @classmethod
    def natural(cls, channels: Sequence[int]) -> Sectors:
        """Natural-parity sectors with ``N(l)`` channels for ``l = 0..len(channels)-1`` (zeros skipped)."""
        return cls(tuple((l, (-1) ** l, n) for l, n in enumerate(channels) if n > 0))

    @classmethod
    def trivial(cls) -> Sectors:
        """One scalar channel: the boundary leg of order-2 and order-1 tensors."""
        return cls(((0, 1, 1),))

    @cached_property
    def sectors(self) -> tuple[Sector, ...]:
        return tuple((l, p) for l, p, _ in self.blocks)

    @cached_property
    def mult(self) -> dict[Sector, int]:
        return {(l, p): n for l, p, n in self.blocks}

    @cached_property
    def offsets(self) -> dict[Sector, int]:
        out, start = {}, 0
        for l, p, n in self.blocks:
            out[(l, p)] = start
            start += (2 * l + 1) * n
        return out

    @property
    def dim(self) -> int:
        return sum((2 * l + 1) * n for l, _, n in self.blocks)

    def block(self, x: torch.Tensor, sector: Sector) -> torch.Tensor:
        """View ``(..., 2l+1, n)`` of the ``sector`` block of a flat vector ``x: (..., dim)``."""
        l = sector[0]
        start, n = self.offsets[sector], self.mult[sector]
        return x[..., start:start + (2 * l + 1) * n].unflatten(-1, (2 * l + 1, n))

    def with_mult(self, mult: Mapping[Sector, int]) -> Sectors:
        """Same sectors (in order) with new multiplicities; sectors with ``0`` are dropped."""
        return Sectors(tuple((l, p, int(mult[(l, p)])) for l, p, _ in self.blocks
                            if int(mult[(l, p)]) > 0))


def decay_channels(n0: int, l_max: int, a: float) -> list[int]:
    """Channel counts ``N(l) = round((N(0) - 1) exp(-l/a) + 1)`` for ``l = 0..l_max`` (eq. 45)."""
    if n0 < 1:
        raise ConfigError(f"N(0) must be >= 1, got {n0}")
    # round half up, as "rounded to the nearest integer" (numpy would round half to even)
    return [int(math.floor((n0 - 1) * math.exp(-l / a) + 1 + 0.5)) for l in range(l_max + 1)]


# ------------------------------------------------------------------------------------------
# Order-3 equivariant tensors
# ------------------------------------------------------------------------------------------

Key = tuple[Sector, Sector, Sector]


class EquivariantTensor:
    """Order-3 equivariant tensor (eq. 25): coefficient blocks on three legs (:class:`Sectors`).

    Parameters
    ----------
    legs : (Sectors, Sectors, Sectors)
        Left, middle ("physical") and right leg.
    blocks : mapping ``(s1, s2, s3) -> (n1, n2, n3)`` tensor
        Coefficients of allowed sector triples; missing ones are zero.
    """

    def __init__(self, legs: Sequence[Sectors], blocks: Mapping[Key, torch.Tensor]):
        self.legs = tuple(legs)
        if len(self.legs) != 3:
            raise ShapeError(f"an order-3 tensor has 3 legs, got {len(self.legs)}")
        self.blocks: dict[Key, torch.Tensor] = {}
        for key, value in blocks.items():
            if not allowed(*key):
                raise ShapeError(f"block {key} violates the triangle or parity rule")
            shape = tuple(leg.mult.get(s, -1) for leg, s in zip(self.legs, key))
            if tuple(value.shape) != shape:
                raise ShapeError(f"block {key} has shape {tuple(value.shape)}, expected {shape}")
            self.blocks[key] = value

    @staticmethod
    def keys_for(legs: Sequence[Sectors]) -> list[Key]:
        """All allowed sector triples of three legs."""
        return [(a, b, c) for a in legs[0].sectors for b in legs[1].sectors
                for c in legs[2].sectors if allowed(a, b, c)]

    @classmethod
    def random(cls, legs: Sequence[Sectors], generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64, scale: float = 1.0) -> EquivariantTensor:
        """Gaussian coefficients (standard deviation ``scale``) on every allowed block."""
        blocks = {}
        for key in cls.keys_for(legs):
            shape = tuple(leg.mult[s] for leg, s in zip(legs, key))
            blocks[key] = scale * torch.randn(shape, generator=generator, dtype=dtype)
        return cls(legs, blocks)

    @property
    def n_params(self) -> int:
        return sum(b.numel() for b in self.blocks.values())

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.blocks.values())).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self.blocks.values())).device

    def to_dense(self) -> torch.Tensor:
        """Dense tensor ``(D1, D2, D3)`` in the flat layout of the three legs."""
        dims = tuple(leg.dim for leg in self.legs)
        dense = torch.zeros(dims, dtype=self.dtype, device=self.device)
        for (s1, s2, s3), c in self.blocks.items():
            w = coupling(s1[0], s2[0], s3[0], self.dtype)
            block = torch.einsum("abc,xyz->axbycz", w, c).reshape(  # [(m1 n1), (m2 n2), (m3 n3)]
                w.shape[0] * c.shape[0], w.shape[1] * c.shape[1], w.shape[2] * c.shape[2])
            o = [leg.offsets[s] for leg, s in zip(self.legs, (s1, s2, s3))]
            dense[o[0]:o[0] + block.shape[0], o[1]:o[1] + block.shape[1],
                  o[2]:o[2] + block.shape[2]] = block
        return dense

    def __call__(self, u: torch.Tensor, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Trilinear form (eq. 24) of batched vectors ``(..., D_k)`` -> ``(...)``."""
        return torch.einsum("abc,...a,...b,...c->...", self.to_dense(), u, v, w)


def contract_chain(cores: Sequence[EquivariantTensor], inputs: Sequence[torch.Tensor]
                   ) -> torch.Tensor:
    """Contract an equivariant tensor train (eq. 29) with one input vector per core.

    ``cores[0]`` and ``cores[-1]`` have trivial outer legs. ``inputs[k]: (batch, D_phys_k)``.
    Returns ``(batch,)``; computed right to left as in Algorithm 1.
    """
    u = torch.ones(inputs[0].shape[0], 1, dtype=inputs[0].dtype)  # [batch, 1]
    for core, v in zip(reversed(cores), reversed(inputs)):
        u = torch.einsum("abc,zb,zc->za", core.to_dense(), v, u)  # [batch, D_left]
    return u[:, 0]


# ------------------------------------------------------------------------------------------
# Outer product (eq. 17)
# ------------------------------------------------------------------------------------------

def outer(u: torch.Tensor, u_sectors: Sectors, v: torch.Tensor, v_sectors: Sectors,
          l_max: int | None = None) -> tuple[torch.Tensor, Sectors]:
    """Outer product of two covariant vectors re-expressed as a covariant vector (eq. 17).

    For every output sector ``(l, p)`` the channels run over the allowed pairs of input sectors
    ``(s', s'')`` (in the order of the input sectors, ``s'`` major) and then over ``(n', n'')``.

    Parameters
    ----------
    u : (..., u_sectors.dim), v : (..., v_sectors.dim)
    l_max : largest output ``l`` (default: all)

    Returns
    -------
    (w, w_sectors) with ``w: (..., w_sectors.dim)``
    """
    out: dict[Sector, list[torch.Tensor]] = {}
    l_top = max(l for l, _, _ in u_sectors.blocks) + max(l for l, _, _ in v_sectors.blocks)
    l_top = l_top if l_max is None else min(l_max, l_top)
    for l in range(l_top + 1):
        for p in (1, -1):
            for s1 in u_sectors.sectors:
                for s2 in v_sectors.sectors:
                    if not allowed(s1, s2, (l, p)):
                        continue
                    w = coupling(s1[0], s2[0], l, u.dtype)
                    prod = torch.einsum("abm,...ax,...by->...mxy", w, u_sectors.block(u, s1),
                                        v_sectors.block(v, s2))  # [..., 2l+1, n', n'']
                    out.setdefault((l, p), []).append(prod.flatten(-2))
    blocks, parts = [], []
    for (l, p), pieces in out.items():
        cat = torch.cat(pieces, dim=-1)  # [..., 2l+1, channels]
        blocks.append((l, p, cat.shape[-1]))
        parts.append(cat.flatten(-2))
    return torch.cat(parts, dim=-1), Sectors(tuple(blocks))


# ------------------------------------------------------------------------------------------
# Reshaping to block matrices (Sec. 4.2.2)
# ------------------------------------------------------------------------------------------

def left_matrices(t: EquivariantTensor) -> tuple[dict[Sector, torch.Tensor], dict[Sector, list]]:
    """Reshape ``((1, 2), 3)``: for each right sector ``s`` a matrix ``(rows, n_s)``.

    Rows run over allowed ``(s1, s2)`` pairs and their channels ``(n1, n2)``; entries are
    ``C / sqrt(2l + 1)`` so that orthonormal columns mean a left-unitary tensor (eq. 32).
    Returns the matrices and, per sector, the row layout ``[(s1, s2, n1, n2), ...]``.
    """
    mats, layout = {}, {}
    for s in t.legs[2].sectors:
        pieces, lay = [], []
        for s1 in t.legs[0].sectors:
            for s2 in t.legs[1].sectors:
                if allowed(s1, s2, s):
                    c = t.blocks.get((s1, s2, s))
                    n1, n2 = t.legs[0].mult[s1], t.legs[1].mult[s2]
                    if c is None:
                        c = torch.zeros(n1, n2, t.legs[2].mult[s], dtype=t.dtype, device=t.device)
                    pieces.append(c.reshape(n1 * n2, -1))
                    lay.append((s1, s2, n1, n2))
        if pieces:
            mats[s] = torch.cat(pieces) / math.sqrt(2 * s[0] + 1)  # [rows, n_s]
        layout[s] = lay
    return mats, layout


def right_matrices(t: EquivariantTensor) -> tuple[dict[Sector, torch.Tensor], dict[Sector, list]]:
    """Reshape ``(1, (2, 3))``: for each left sector ``s`` a matrix ``(n_s, cols)``, scaled
    by ``1/sqrt(2l+1)`` (orthonormal rows mean a right-unitary tensor)."""
    mats, layout = {}, {}
    for s in t.legs[0].sectors:
        pieces, lay = [], []
        for s2 in t.legs[1].sectors:
            for s3 in t.legs[2].sectors:
                if allowed(s, s2, s3):
                    c = t.blocks.get((s, s2, s3))
                    n2, n3 = t.legs[1].mult[s2], t.legs[2].mult[s3]
                    if c is None:
                        c = torch.zeros(t.legs[0].mult[s], n2, n3, dtype=t.dtype, device=t.device)
                    pieces.append(c.reshape(c.shape[0], n2 * n3))
                    lay.append((s2, s3, n2, n3))
        if pieces:
            mats[s] = torch.cat(pieces, dim=1) / math.sqrt(2 * s[0] + 1)  # [n_s, cols]
        layout[s] = lay
    return mats, layout


def _from_left(legs: Sequence[Sectors], mats: Mapping[Sector, torch.Tensor],
               layout: Mapping[Sector, list]) -> dict[Key, torch.Tensor]:
    blocks = {}
    for s, m in mats.items():
        m = m * math.sqrt(2 * s[0] + 1)
        start = 0
        for s1, s2, n1, n2 in layout[s]:
            blocks[(s1, s2, s)] = m[start:start + n1 * n2].reshape(n1, n2, m.shape[1])
            start += n1 * n2
    return blocks


def _from_right(legs: Sequence[Sectors], mats: Mapping[Sector, torch.Tensor],
                layout: Mapping[Sector, list]) -> dict[Key, torch.Tensor]:
    blocks = {}
    for s, m in mats.items():
        m = m * math.sqrt(2 * s[0] + 1)
        start = 0
        for s2, s3, n2, n3 in layout[s]:
            blocks[(s, s2, s3)] = m[:, start:start + n2 * n3].reshape(m.shape[0], n2, n3)
            start += n2 * n3
    return blocks


def _times_left(t: EquivariantTensor, factors: Mapping[Sector, torch.Tensor], leg: Sectors
                ) -> EquivariantTensor:
    """``t`` with its left leg multiplied by per-sector matrices ``(n_new, n_old)``."""
    blocks = {(s1, s2, s3): torch.einsum("ab,bcd->acd", factors[s1], c)
              for (s1, s2, s3), c in t.blocks.items() if s1 in factors and leg.mult.get(s1)}
    return EquivariantTensor((leg, t.legs[1], t.legs[2]), blocks)


def _times_right(t: EquivariantTensor, factors: Mapping[Sector, torch.Tensor], leg: Sectors
                 ) -> EquivariantTensor:
    """``t`` with its right leg multiplied by per-sector matrices ``(n_old, n_new)``."""
    blocks = {(s1, s2, s3): torch.einsum("abc,cd->abd", c, factors[s3])
              for (s1, s2, s3), c in t.blocks.items() if s3 in factors and leg.mult.get(s3)}
    return EquivariantTensor((t.legs[0], t.legs[1], leg), blocks)


def _check_bond(a: EquivariantTensor, b: EquivariantTensor) -> None:
    if a.legs[2] != b.legs[0]:
        raise ShapeError(f"bond mismatch: {a.legs[2]} vs {b.legs[0]}")


def orthogonalize_left(a: EquivariantTensor, b: EquivariantTensor
                       ) -> tuple[EquivariantTensor, EquivariantTensor]:
    """Block-wise QR (Secs. 4.2.1–4.2.2): ``a`` becomes left-unitary (eq. 32), ``R`` moves
    into ``b``; the contracted pair ``a b`` is unchanged. Bond sectors may shrink in size."""
    _check_bond(a, b)
    mats, layout = left_matrices(a)
    qs, rs, mult = {}, {}, {}
    for s in a.legs[2].sectors:
        if s not in mats:
            mult[s] = 0
            continue
        q, r = torch.linalg.qr(mats[s])  # [rows, k], [k, n_s]
        sign = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(r.dtype)
        qs[s], rs[s], mult[s] = q * sign, r * sign[:, None], q.shape[1]
    bond = a.legs[2].with_mult(mult)
    legs = (a.legs[0], a.legs[1], bond)
    new_a = EquivariantTensor(legs, _from_left(legs, qs, layout))
    return new_a, _times_left(b, rs, bond)


def orthogonalize_right(a: EquivariantTensor, b: EquivariantTensor
                        ) -> tuple[EquivariantTensor, EquivariantTensor]:
    """Block-wise LQ: ``b`` becomes right-unitary, ``L`` moves into ``a``; product unchanged."""
    _check_bond(a, b)
    mats, layout = right_matrices(b)
    qs, ls, mult = {}, {}, {}
    for s in b.legs[0].sectors:
        if s not in mats:
            mult[s] = 0
            continue
        q, r = torch.linalg.qr(mats[s].T)  # mats = r^T q^T
        sign = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(r.dtype)
        qs[s], ls[s], mult[s] = (q * sign).T, (r * sign[:, None]).T, q.shape[1]
    bond = b.legs[0].with_mult(mult)
    legs = (bond, b.legs[1], b.legs[2])
    new_b = EquivariantTensor(legs, _from_right(legs, qs, layout))
    return _times_right(a, ls, bond), new_b


def _keep(spectra: Mapping[Sector, torch.Tensor], max_rank: int | None, cutoff: float | None
          ) -> dict[Sector, int]:
    top = max((float(s[0]) for s in spectra.values() if s.numel()), default=0.0)
    keep = {}
    for sector, s in spectra.items():
        k = s.numel() if cutoff is None else int((s > cutoff * top).sum())
        keep[sector] = k if max_rank is None else min(k, max_rank)
    if top > 0 and not any(keep.values()):
        best = max(spectra, key=lambda sec: float(spectra[sec][0]) if spectra[sec].numel() else -1)
        keep[best] = 1
    return keep


def svd_bond(a: EquivariantTensor, b: EquivariantTensor, max_rank: int | None = None,
             cutoff: float | None = None
             ) -> tuple[EquivariantTensor, EquivariantTensor, dict[Sector, torch.Tensor]]:
    """SVD orthogonalisation of the bond between ``a`` and ``b`` (Sec. 4.2.2, Remark 3).

    For each bond sector, ``Â = U1 D1 V1ᵀ`` and ``B̂ = U2 D2 V2ᵀ`` are decomposed separately and
    the small core ``D1 V1ᵀ U2 D2 = U3 D3 V3ᵀ``, so ``ÂB̂ = (U1 U3) D3 (V3ᵀ V2ᵀ)`` without forming
    the large product. The new cores are ``U D^{1/2}`` and ``D^{1/2} Vᵀ``; ``max_rank`` (per
    sector) and ``cutoff`` (relative to the largest singular value of all sectors) truncate.

    Returns the new cores and the kept singular values per bond sector.
    """
    _check_bond(a, b)
    ma, la = left_matrices(a)
    mb, lb = right_matrices(b)
    parts, spectra = {}, {}
    for s in a.legs[2].sectors:
        if s not in ma or s not in mb:
            spectra[s] = torch.zeros(0, dtype=a.dtype)
            continue
        u1, d1, v1h = torch.linalg.svd(ma[s], full_matrices=False)
        u2, d2, v2h = torch.linalg.svd(mb[s], full_matrices=False)
        u3, d3, v3h = torch.linalg.svd((d1[:, None] * (v1h @ u2)) * d2, full_matrices=False)
        parts[s] = (u1 @ u3, d3, v3h @ v2h)
        spectra[s] = d3
    keep = _keep(spectra, max_rank, cutoff)
    left, right, kept = {}, {}, {}
    for s, (u, d, vh) in parts.items():
        k = keep[s]
        if k == 0:
            continue
        root = d[:k].sqrt()
        left[s], right[s], kept[s] = u[:, :k] * root, root[:, None] * vh[:k], d[:k]
    bond = a.legs[2].with_mult({s: keep.get(s, 0) for s in a.legs[2].sectors})
    legs_a, legs_b = (a.legs[0], a.legs[1], bond), (bond, b.legs[1], b.legs[2])
    return (EquivariantTensor(legs_a, _from_left(legs_a, left, la)),
            EquivariantTensor(legs_b, _from_right(legs_b, right, lb)), kept)


# ------------------------------------------------------------------------------------------
# Two-site tensors (Sec. 4.3)
# ------------------------------------------------------------------------------------------

@dataclass
class TwoSite:
    """Two neighbouring cores contracted over their bond (Sec. 4.3, Fig. 4).

    ``theta[s]`` is the matrix ``Â_s B̂_s`` of bond sector ``s``: rows in the layout
    ``row_layout[s]`` of :func:`left_matrices`, columns in ``col_layout[s]`` of
    :func:`right_matrices`. Any such set of matrices is a general equivariant order-4 tensor.
    """

    legs: tuple[Sectors, Sectors, Sectors, Sectors]
    bond: Sectors
    theta: dict[Sector, torch.Tensor]
    row_layout: dict[Sector, list]
    col_layout: dict[Sector, list]

    def to_dense(self) -> torch.Tensor:
        """Dense ``(D1, D2, D3, D4)`` tensor; the sum over bond sectors of ``W W`` couplings."""
        dims = tuple(leg.dim for leg in self.legs)
        dtype = next(iter(self.theta.values())).dtype
        dense = torch.zeros(dims, dtype=dtype)
        for s, th in self.theta.items():
            l = s[0]
            th = th * (2 * l + 1)  # back to C_A C_B
            r0 = 0
            for s1, s2, n1, n2 in self.row_layout[s]:
                c0 = 0
                for s3, s4, n3, n4 in self.col_layout[s]:
                    c = th[r0:r0 + n1 * n2, c0:c0 + n3 * n4].reshape(n1, n2, n3, n4)
                    w = torch.einsum("abm,mcd->abcd", coupling(s1[0], s2[0], l, dtype),
                                     coupling(l, s3[0], s4[0], dtype))
                    block = torch.einsum("abcd,wxyz->awbxcydz", w, c).reshape(
                        w.shape[0] * n1, w.shape[1] * n2, w.shape[2] * n3, w.shape[3] * n4)
                    o = [leg.offsets[t] for leg, t in zip(self.legs, (s1, s2, s3, s4))]
                    dense[o[0]:o[0] + block.shape[0], o[1]:o[1] + block.shape[1],
                          o[2]:o[2] + block.shape[2], o[3]:o[3] + block.shape[3]] += block
                    c0 += n3 * n4
                r0 += n1 * n2
        return dense


def merge(a: EquivariantTensor, b: EquivariantTensor) -> TwoSite:
    """Contract two neighbouring cores into a :class:`TwoSite` tensor."""
    _check_bond(a, b)
    ma, la = left_matrices(a)
    mb, lb = right_matrices(b)
    theta = {s: ma[s] @ mb[s] for s in a.legs[2].sectors if s in ma and s in mb}
    return TwoSite((a.legs[0], a.legs[1], b.legs[1], b.legs[2]), a.legs[2], theta, la, lb)


def split(two: TwoSite, max_rank: int | None = None, cutoff: float | None = None,
          absorb: str = "both", bond_sectors: Iterable[Sector] | None = None
          ) -> tuple[EquivariantTensor, EquivariantTensor, dict[Sector, torch.Tensor]]:
    """Factorise a two-site tensor by block-wise truncated SVD.

    ``absorb`` in {"left", "right", "both"} says which core takes the singular values
    ("right": the left core is left-unitary). Returns the two cores and the kept spectra.
    """
    if absorb not in ("left", "right", "both"):
        raise ConfigError(f"absorb must be 'left', 'right' or 'both', got {absorb!r}")
    sectors = list(bond_sectors) if bond_sectors is not None else list(two.bond.sectors)
    parts, spectra = {}, {}
    for s in sectors:
        if s not in two.theta:
            spectra[s] = torch.zeros(0)
            continue
        u, d, vh = torch.linalg.svd(two.theta[s], full_matrices=False)
        parts[s], spectra[s] = (u, d, vh), d
    keep = _keep(spectra, max_rank, cutoff)
    left, right, kept = {}, {}, {}
    for s, (u, d, vh) in parts.items():
        k = keep[s]
        if k == 0:
            continue
        d = d[:k]
        dl = {"left": d, "right": torch.ones_like(d), "both": d.sqrt()}[absorb]
        dr = {"left": torch.ones_like(d), "right": d, "both": d.sqrt()}[absorb]
        left[s], right[s], kept[s] = u[:, :k] * dl, dr[:, None] * vh[:k], d
    bond = Sectors(tuple((l, p, keep[(l, p)]) for l, p in sectors if keep.get((l, p), 0) > 0))
    legs_a = (two.legs[0], two.legs[1], bond)
    legs_b = (bond, two.legs[2], two.legs[3])
    return (EquivariantTensor(legs_a, _from_left(legs_a, left, two.row_layout)),
            EquivariantTensor(legs_b, _from_right(legs_b, right, two.col_layout)), kept)
