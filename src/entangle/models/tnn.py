"""Tensor neural networks: dense layers whose weight matrix is a matrix product operator.

Jahromi & Orús, *Variational tensor neural networks for deep learning*, Sec. II B. A dense layer
``y = σ(W x + b)`` (eq. 3) becomes a TNLayer when ``W`` is written as an MPO,

    W[(o_1..o_N), (i_1..i_N)] = w_1[o_1, i_1] w_2[o_2, i_2] ... w_N[o_N, i_N],          (Fig. 5)

with cores ``w_k: (D_{k-1}, o_k, i_k, D_k)``. The activation acts on the contracted layer
(eq. 4), so the MPO is contracted with the input before ``σ``. :class:`MPOLinear` is the MPO
counterpart of :class:`torch.nn.Linear`; :class:`TNNetwork` stacks dense and MPO layers with
activations as in the paper's Tables I-IV.

>>> import torch
>>> from entangle.models.tnn import MPOLinear
>>> layer = MPOLinear(64, 64, n_sites=6, bond_dim=4, generator=torch.Generator().manual_seed(0))
>>> layer.in_shape, layer.out_shape, layer.bond_dims
((2, 2, 2, 2, 2, 2), (2, 2, 2, 2, 2, 2), [4, 4, 4, 4, 4])
>>> layer(torch.zeros(5, 64)).shape
torch.Size([5, 64])
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F

from entangle.errors import ConfigError, ShapeError
from entangle.io import register_model
from entangle.tn import MPO

__all__ = [
    "ACTIVATIONS", "Activation", "Dense", "TNLayer", "TNNConfig", "TNNetwork", "MPOLinear",
    "build_tnn", "balanced_factors", "factorizations", "forward_plan", "ContractionPlan",
]


# ------------------------------------------------------------------------- factorisation
def _n_prime_factors(n: int) -> int:
    """Number of prime factors of ``n`` counted with multiplicity (0 for n = 1)."""
    count, p = 0, 2
    while p * p <= n:
        while n % p == 0:
            n //= p
            count += 1
        p += 1
    return count + (1 if n > 1 else 0)


def factorizations(n: int, n_sites: int, min_factor: int = 2) -> list[tuple[int, ...]]:
    """All non-decreasing tuples of ``n_sites`` integers ``>= min_factor`` whose product is ``n``.

    >>> factorizations(16, 2)
    [(2, 8), (4, 4)]
    """
    if n_sites < 1:
        return []
    if n_sites == 1:
        return [(n,)] if n >= min_factor else []
    out = []
    f = min_factor
    while f**n_sites <= n:
        if n % f == 0:
            out.extend((f, *rest) for rest in factorizations(n // f, n_sites - 1, f))
        f += 1
    return out


def _balanced(options: list[tuple[int, ...]]) -> tuple[int, ...]:
    # smallest largest factor, then largest smallest factor: (8, 8, 16) beats (4, 16, 16)
    return min(options, key=lambda t: (max(t), -min(t)))


def _factor_hint(name: str, n: int, n_sites: int) -> str:
    """Human-readable list of the ways ``n`` can be split into MPO sites."""
    max_sites = _n_prime_factors(n)
    if max_sites < 2:
        near = [m for m in range(max(4, n - 8), n + 9) if _n_prime_factors(m) >= 2][:6]
        return (f"{name}={n} has no factorisation into 2 or more factors >= 2, so no MPO with "
                f"several sites fits it; put a non-trainable Dense layer in front to change the size "
                f"(Jahromi & Orús, Sec. II B) or use a nearby size such as {near}")
    opts = factorizations(n, n_sites) if n_sites >= 2 else []
    listed = ", ".join(str(o) for o in opts[:8]) + (" ..." if len(opts) > 8 else "")
    per_count = "; ".join(f"{s} sites: {_balanced(factorizations(n, s))}" for s in range(2, min(max_sites, 12) + 1))
    valid = f"factorisations of {name}={n} into {n_sites} sites: {listed}. " if opts else (
        f"{name}={n} cannot be split into {n_sites} factors >= 2 (at most {max_sites} sites). ")
    return valid + f"Balanced factorisations by site count: {per_count}"


def balanced_factors(n: int, n_sites: int, name: str = "size") -> tuple[int, ...]:
    """The most balanced split of ``n`` into ``n_sites`` factors ``>= 2`` (ascending).

    Raises :class:`ShapeError` listing the valid choices when there is none.

    >>> balanced_factors(64, 6), balanced_factors(1024, 3)
    ((2, 2, 2, 2, 2, 2), (8, 8, 16))
    """
    opts = factorizations(n, n_sites)
    if not opts:
        raise ShapeError(_factor_hint(name, n, n_sites))
    return _balanced(opts)


# ---------------------------------------------------------------- contraction planning
# y = x W^T with W an MPO is a tensor-network contraction whose best order depends on the batch
# size. We contract the cores in contiguous *blocks* (each block merged first, in the order that
# minimises its cost: the matrix-chain problem) and then sweep the batch through the blocks one
# matmul each. One block covering every site is "contract W, then one matmul"; one block per
# site is the site-by-site contraction; in between, blocks of a few sites turn the skinny matmuls
# of small site dimensions into larger ones. The sweep may run left to right or right to left.
#
# Cost = FLOPs + _GAMMA * (tensor elements read or written by copies and matmuls)
#        + _OVERHEAD * (operations). The memory term matters: with site dimension 2 and small
# bonds the site-by-site matmuls are memory-bound and run 10-50x below peak FLOP rate.
_GAMMA = 32.0       # FLOP-equivalents per element moved (calibrated on one CPU core, float32)
_OVERHEAD = 2.0e5   # FLOP-equivalents per tensor operation (kernel launch, Python)


@dataclass(frozen=True)
class ContractionPlan:
    """How :class:`MPOLinear` contracts a batch with its cores (see :func:`forward_plan`).

    Attributes
    ----------
    kind : ``"dense"`` (one block: ``W`` first, then one matmul), ``"ltr"`` or ``"rtl"`` (the
        batch goes through the blocks left to right or right to left).
    blocks : ``(first, last)`` site ranges of the blocks, in sweep order, inclusive.
    flops : forward FLOPs (a multiply-add counts 2) of merging the blocks and applying them.
    cost : the modelled cost in FLOP-equivalents that chose this plan.
    """

    kind: str
    blocks: tuple[tuple[int, int], ...]
    flops: int
    cost: float

    @property
    def name(self) -> str:
        return "dense" if self.kind == "dense" else f"{self.kind}{[b - a + 1 for a, b in self.blocks]}"


Shapes = tuple[tuple[int, int, int, int], ...]


@lru_cache(maxsize=1024)
def _chain_tables(shapes: Shapes) -> tuple[list[list[float]], list[list[int]], list[list[int]]]:
    """Interval DP for merging cores ``a..b`` into one block: (cost, split point, MACs) tables."""
    n = len(shapes)
    bond = [shapes[0][0]] + [s[3] for s in shapes]  # bond[k] = left bond of core k
    phys = [s[1] * s[2] for s in shapes]
    cost = [[0.0] * n for _ in range(n)]
    macs = [[0] * n for _ in range(n)]
    split = [[-1] * n for _ in range(n)]
    for length in range(2, n + 1):
        for a in range(n - length + 1):
            b = a + length - 1
            best = None
            for m in range(a, b):
                p_left, p_right = math.prod(phys[a:m + 1]), math.prod(phys[m + 1:b + 1])
                mac = bond[a] * p_left * bond[m + 1] * p_right * bond[b + 1]
                out = bond[a] * p_left * p_right * bond[b + 1]
                # one matmul, then one copy that sorts the legs into (D_l, O, I, D_r)
                c = cost[a][m] + cost[m + 1][b] + 2 * mac + 3 * _GAMMA * out + 2 * _OVERHEAD
                if best is None or c < best:
                    best, split[a][b], macs[a][b] = c, m, macs[a][m] + macs[m + 1][b] + mac
            cost[a][b] = best
    return cost, split, macs


def _sweep_plan(shapes: Shapes, batch: int) -> tuple[float, int, tuple[tuple[int, int], ...]]:
    """Best partition into >= 2 blocks for a left-to-right sweep: (cost, flops, blocks)."""
    n = len(shapes)
    outs, ins = [s[1] for s in shapes], [s[2] for s in shapes]
    bond = [shapes[0][0]] + [s[3] for s in shapes]
    build_cost, _, build_macs = _chain_tables(shapes)
    # best[j]: cheapest way to have applied sites 0..j-1 (x permuted into the sweep layout first)
    best: list[tuple[float, int, tuple]] = [(2 * _GAMMA * batch * math.prod(ins) + _OVERHEAD, 0, ())]
    for j in range(1, n + 1):
        options = []
        for a in range(j):
            b = j - 1
            if a == 0 and b == n - 1:
                continue  # one block is the dense plan, costed separately
            o_before, i_after = math.prod(outs[:a]), math.prod(ins[b + 1:])
            o_blk, i_blk = math.prod(outs[a:b + 1]), math.prod(ins[a:b + 1])
            mac = batch * o_before * i_after * bond[a] * i_blk * o_blk * bond[b + 1]
            state_in = batch * o_before * i_blk * i_after * bond[a]
            state_out = batch * o_before * o_blk * i_after * bond[b + 1]
            moved = state_in + state_out * (3 if b < n - 1 else 1)  # + transpose into the next layout
            if bond[a] > 1 or bond[b + 1] > 1:
                moved += 2 * bond[a] * i_blk * o_blk * bond[b + 1]  # block as a matrix
            c = best[a][0] + build_cost[a][b] + 2 * mac + _GAMMA * moved + 2 * _OVERHEAD
            options.append((c, best[a][1] + 2 * (mac + build_macs[a][b]), best[a][2] + ((a, b),)))
        best.append(min(options) if options else (math.inf, 0, ()))
    return best[n]


def _mirror(shapes: Shapes) -> Shapes:
    return tuple((dr, o, i, dl) for dl, o, i, dr in reversed(shapes))


@lru_cache(maxsize=4096)
def forward_plan(shapes: Shapes, batch: int) -> ContractionPlan:
    """Cheapest modelled way to apply an MPO with core ``shapes`` to ``batch`` inputs.

    Compares contracting ``W`` first and one matmul (``"dense"``) with sweeping the batch
    through blocks of neighbouring cores, left to right or right to left, over all partitions
    into blocks (dynamic programming). The cost counts FLOPs plus a memory-traffic term (see the
    comments at the top of this section); :attr:`ContractionPlan.flops` counts FLOPs only.
    """
    n = len(shapes)
    n_in, n_out = math.prod(s[2] for s in shapes), math.prod(s[1] for s in shapes)
    build_cost, _, build_macs = _chain_tables(shapes)
    dense_macs = build_macs[0][n - 1] + batch * n_in * n_out
    dense_cost = build_cost[0][n - 1] + 2 * batch * n_in * n_out + _GAMMA * batch * (n_in + n_out) + _OVERHEAD
    plans = [ContractionPlan("dense", ((0, n - 1),), 2 * dense_macs, dense_cost)]
    if n > 1:
        cost, flops, blocks = _sweep_plan(shapes, batch)
        plans.append(ContractionPlan("ltr", blocks, flops, cost))
        cost, flops, blocks = _sweep_plan(_mirror(shapes), batch)
        mirror_cost = 2 * _GAMMA * batch * (n_in + n_out) + 2 * _OVERHEAD  # permute x and y
        plans.append(ContractionPlan("rtl", blocks, flops, cost + mirror_cost))
    return min(plans, key=lambda p: p.cost)


def _merge_block(cores: Sequence[torch.Tensor], a: int, b: int, split: list[list[int]]) -> torch.Tensor:
    """Cores ``a..b`` merged into one core ``(D_{a-1}, o_a..o_b, i_a..i_b, D_b)`` in the planned order.

    Each pairwise merge is one matmul and one copy that groups the output legs before the input
    legs (a single sort at the end would be a permutation of 2 (b - a + 1) small legs, far slower).
    """
    if a == b:
        return cores[a]
    m = split[a][b]
    left, right = _merge_block(cores, a, m, split), _merge_block(cores, m + 1, b, split)
    dl, o1, i1, dm = left.shape
    _, o2, i2, dr = right.shape
    out = left.reshape(-1, dm) @ right.reshape(dm, -1)  # [Dl O1 I1, O2 I2 Dr]
    out = out.reshape(dl, o1, i1, o2, i2, dr).permute(0, 1, 3, 2, 4, 5)
    return out.reshape(dl, o1 * o2, i1 * i2, dr)


def _sweep_blocks(x: torch.Tensor, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """``x: (batch, prod i)`` through merged blocks ``(D_l, O, I, D_r)``, left to right.

    The state is kept as a matrix whose columns are exactly the legs the next block contracts,
    ``rows = (inputs of later blocks, batch, outputs so far)``, ``cols = (D_l, I)``, so each block
    costs one matmul plus one transpose that moves the next block's inputs to the columns.
    """
    b, m = x.shape[0], len(blocks)
    ins = [blk.shape[2] for blk in blocks]
    state = x.reshape(b, *ins).permute(*range(2, m + 1), 0, 1).reshape(-1, ins[0])  # [I_2..I_m b, I_1]
    for k, blk in enumerate(blocks):
        dl, o, i, dr = blk.shape
        if dl == 1 and dr == 1:
            mat = blk.reshape(o, i).mT  # a view: the matmul reads it transposed
        else:
            mat = blk.permute(0, 2, 1, 3).reshape(dl * i, o * dr)  # [D_l I, O D_r]
        state = state.reshape(-1, dl * i) @ mat  # [later inputs, batch, outputs so far, O, D_r]
        if k + 1 < m:
            state = state.reshape(ins[k + 1], -1).mT  # [rest, I_{k+1}]
    return state.reshape(b, -1)


def _dense_weight(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """``W: (prod o, prod i)`` merged in the cheapest chain order."""
    _, split, _ = _chain_tables(tuple(tuple(c.shape) for c in cores))
    w = _merge_block(cores, 0, len(cores) - 1, split)
    return w.reshape(w.shape[1], w.shape[2])


def _apply_mpo(x: torch.Tensor, cores: Sequence[torch.Tensor], bias: torch.Tensor | None
               ) -> tuple[torch.Tensor, ContractionPlan]:
    """``x W^T + bias`` by the plan of :func:`forward_plan`. ``x: (batch, prod i)``."""
    shapes = tuple(tuple(c.shape) for c in cores)
    plan = forward_plan(shapes, x.shape[0])
    if plan.kind == "dense":
        return F.linear(x, _dense_weight(cores), bias), plan
    b, n = x.shape[0], len(cores)
    if plan.kind == "rtl":
        cores = [c.permute(3, 1, 2, 0) for c in reversed(cores)]  # mirror the chain
        x = x.reshape(b, *(s[2] for s in shapes)).permute(0, *range(n, 0, -1)).reshape(b, -1)
    _, split, _ = _chain_tables(tuple(tuple(c.shape) for c in cores))
    y = _sweep_blocks(x, [_merge_block(cores, a, z, split) for a, z in plan.blocks])
    if plan.kind == "rtl":
        y = y.reshape(b, *(s[1] for s in reversed(shapes))).permute(0, *range(n, 0, -1)).reshape(b, -1)
    return (y if bias is None else y + bias), plan


# ------------------------------------------------------------------------------- layer
_NUMERICAL_ZERO = 1e-13  # relative singular value below which from_linear treats a value as zero


class MPOLinear(nn.Module):
    """Drop-in replacement of :class:`torch.nn.Linear` whose weight is an MPO.

    ``y = x W^T + b`` with ``W: (out_features, in_features)`` stored as cores
    ``w_k: (D_{k-1}, o_k, i_k, D_k)`` (:attr:`cores`, an :class:`torch.nn.ParameterList`), where
    ``prod(o_k) = out_features`` and ``prod(i_k) = in_features`` (row-major multi-indices).

    Parameters
    ----------
    in_features, out_features : sizes of the input and output.
    in_shape, out_shape : site dimensions ``(i_1, ..., i_N)`` and ``(o_1, ..., o_N)``; when left
        out, the sizes are split into ``n_sites`` balanced factors (see :func:`balanced_factors`).
    n_sites : number of MPO sites when the shapes are not given. Default: as many as both sizes
        allow (all factors 2 for powers of two, as in the paper).
    bond_dim : bond dimension ``D`` (int, or one per bond); capped at the largest rank each
        bond can carry, ``min(prod_{j<=k} o_j i_j, prod_{j>k} o_j i_j)``.
    bias : learn an additive bias like :class:`torch.nn.Linear`.
    generator : random source for the initialisation.

    Notes
    -----
    Initialisation matches :class:`torch.nn.Linear`: the dense weight entries have variance
    ``1 / (3 in_features)`` (that of ``U(-1/sqrt(in), 1/sqrt(in))``) and the bias is
    ``U(-1/sqrt(in), 1/sqrt(in))``, so outputs have the same variance as a dense layer's.

    The forward pass picks, for each batch size, the cheapest of contracting the MPO into ``W``
    and one matmul, or sweeping the batch through the cores site by site or in blocks of
    neighbouring sites (see :func:`forward_plan`); :attr:`last_plan` tells which was used.
    """

    def __init__(self, in_features: int, out_features: int, *, in_shape: Sequence[int] | None = None,
                 out_shape: Sequence[int] | None = None, n_sites: int | None = None,
                 bond_dim: int | Sequence[int] = 8, bias: bool = True, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, generator: torch.Generator | None = None):
        super().__init__()
        in_shape, out_shape = self._resolve_shapes(in_features, out_features, in_shape, out_shape, n_sites)
        n = len(in_shape)
        bonds = [bond_dim] * (n - 1) if isinstance(bond_dim, int) else list(bond_dim)
        if len(bonds) != n - 1 or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in bonds):
            raise ConfigError(f"MPOLinear: bond_dim must be an integer >= 1 or {n - 1} of them, got {bond_dim!r}")
        bonds = [min(d, cap) for d, cap in zip(bonds, self._max_bonds(in_shape, out_shape))]
        dtype = torch.get_default_dtype() if dtype is None else dtype
        self.in_features, self.out_features = in_features, out_features
        self.in_shape, self.out_shape = in_shape, out_shape
        # Var of U(-a, a) is a^2 / 3: the variance of nn.Linear's default weights (a = 1/sqrt(in)).
        draw_on = generator.device if generator is not None else device  # then move to `device`
        mpo = MPO.random(out_shape, in_shape, bonds, std=1.0 / math.sqrt(3 * in_features), generator=generator,
                         dtype=dtype, device=draw_on)
        self.cores = nn.ParameterList([nn.Parameter(c.to(device)) for c in mpo.cores])
        if bias:
            bound = 1.0 / math.sqrt(in_features)
            u = torch.rand(out_features, generator=generator, dtype=dtype, device=draw_on)
            self.bias = nn.Parameter(((2 * u - 1) * bound).to(device))
        else:
            self.register_parameter("bias", None)
        self._pair: tuple[int, torch.Tensor] | None = None
        self.last_plan: ContractionPlan | None = None
        self.compression_error: float | None = None

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _resolve_shapes(in_features: int, out_features: int, in_shape: Sequence[int] | None,
                        out_shape: Sequence[int] | None, n_sites: int | None
                        ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ShapeError(f"MPOLinear: {name} must be a positive integer, got {value!r}")
        if n_sites is not None and (not isinstance(n_sites, int) or n_sites < 2):
            raise ShapeError(f"MPOLinear: n_sites must be an integer >= 2 (an MPO with one site is a dense "
                             f"matrix), got {n_sites!r}")
        given = [len(s) for s in (in_shape, out_shape) if s is not None]
        if n_sites is None:
            n_sites = given[0] if given else min(_n_prime_factors(in_features), _n_prime_factors(out_features))
            n_sites = max(n_sites, 2)
        shapes = []
        for name, size, shape in (("in_features", in_features, in_shape), ("out_features", out_features, out_shape)):
            if shape is None:
                shapes.append(balanced_factors(size, n_sites, name))
                continue
            shape = tuple(shape)
            if any(not isinstance(d, int) or d < 1 for d in shape):
                raise ShapeError(f"MPOLinear: {name[:-9]}_shape must hold positive integers, got {shape}")
            if math.prod(shape) != size or len(shape) != n_sites:
                problem = (f"has {len(shape)} sites, expected {n_sites}" if len(shape) != n_sites
                           else f"has product {math.prod(shape)} != {name}={size}")
                raise ShapeError(f"MPOLinear: {name[:-9]}_shape {shape} {problem}. {_factor_hint(name, size, n_sites)}")
            shapes.append(shape)
        return shapes[0], shapes[1]

    @staticmethod
    def _max_bonds(in_shape: Sequence[int], out_shape: Sequence[int]) -> list[int]:
        sizes = [o * i for o, i in zip(out_shape, in_shape)]
        return [min(math.prod(sizes[: k + 1]), math.prod(sizes[k + 1:])) for k in range(len(sizes) - 1)]

    @classmethod
    def from_linear(cls, linear: nn.Linear, max_bond: int | None = None, cutoff: float | None = None,
                    in_shape: Sequence[int] | None = None, out_shape: Sequence[int] | None = None,
                    n_sites: int | None = None) -> MPOLinear:
        """Compress a dense layer into an MPO layer by TT-SVD (Fig. 4 / Fig. 5 (b) of the paper).

        ``max_bond`` and ``cutoff`` (relative to the largest singular value of each bond) truncate
        every bond; with ``cutoff=None`` only numerically zero singular values (``< 1e-13 s_0``)
        are dropped, so an exactly low-rank MPO comes back with its own bond dimensions. The SVDs
        run in float64; the result has the dtype and device of ``linear``. The relative Frobenius
        error ``||W - W_mpo||_F / ||W||_F`` is stored in :attr:`compression_error`; it is exact,
        since the TT-SVD truncation errors of successive bonds are orthogonal.
        """
        cutoff = _NUMERICAL_ZERO if cutoff is None else cutoff
        w = linear.weight.detach()
        out_features, in_features = w.shape
        layer = cls(in_features, out_features, in_shape=in_shape, out_shape=out_shape, n_sites=n_sites,
                    bond_dim=1, bias=linear.bias is not None, dtype=w.dtype, device=w.device)
        mpo, discarded = MPO.from_matrix(w.to(torch.float64), layer.out_shape, layer.in_shape, max_bond, cutoff)
        layer.set_cores([c.to(w.dtype) for c in mpo.cores])
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach())
        norm = float(torch.linalg.norm(w.to(torch.float64)))
        layer.compression_error = float(discarded) / norm if norm > 0 else 0.0
        return layer

    # -------------------------------------------------------------------- properties
    @property
    def n_sites(self) -> int:
        return len(self.cores)

    @property
    def bond_dims(self) -> list[int]:
        return [c.shape[-1] for c in list(self.cores)[:-1]]

    @property
    def mpo(self) -> MPO:
        """The weight as an :class:`entangle.tn.MPO` of the current cores (autograd-connected)."""
        return MPO(list(self.cores))

    @property
    def weight(self) -> torch.Tensor:
        """Dense weight ``(out_features, in_features)``, as in :class:`torch.nn.Linear`."""
        return _dense_weight(list(self.cores))

    def num_parameters(self) -> int:
        """Number of stored parameters (cores plus bias)."""
        return sum(p.numel() for p in self.parameters())

    def forward_plan(self, batch: int) -> ContractionPlan:
        """The contraction plan (and its forward FLOPs) for ``batch`` inputs; see :func:`forward_plan`."""
        return forward_plan(tuple(tuple(c.shape) for c in self.cores), batch)

    def set_cores(self, cores: Sequence[torch.Tensor]) -> None:
        """Replace the cores (bond dimensions may change); each new core becomes a Parameter.

        Cores given as the very Parameter already stored are kept as they are.
        """
        cores = list(cores)
        if len(cores) != self.n_sites:
            raise ShapeError(f"MPOLinear.set_cores: expected {self.n_sites} cores, got {len(cores)}")
        mpo = MPO(cores)  # validates bonds and boundaries
        if tuple(mpo.out_dims) != self.out_shape or tuple(mpo.in_dims) != self.in_shape:
            raise ShapeError(f"MPOLinear.set_cores: cores have out/in dims {mpo.out_dims}/{mpo.in_dims}, "
                             f"expected {list(self.out_shape)}/{list(self.in_shape)}")
        for k, core in enumerate(cores):
            if core is not self.cores[k]:
                self.cores[k] = nn.Parameter(core.detach(), requires_grad=self.cores[k].requires_grad)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Sweeps change bond dimensions: take the core shapes of the state being loaded, so that
        # a freshly built layer (config bond_dim) can load a trained one.
        incoming = [state_dict.get(f"{prefix}cores.{k}") for k in range(self.n_sites)]
        if all(isinstance(t, torch.Tensor) for t in incoming) and \
                any(t.shape != c.shape for t, c in zip(incoming, self.cores)):
            self.set_cores([t.to(dtype=c.dtype, device=c.device) for t, c in zip(incoming, self.cores)])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @contextmanager
    def substitute_pair(self, k: int, theta: torch.Tensor) -> Iterator[None]:
        """Within the block, sites ``k, k+1`` are replaced by the bond tensor ``theta``.

        ``theta: (D_{k-1}, o_k, i_k, o_{k+1}, i_{k+1}, D_{k+1})`` as returned by
        :func:`entangle.tn.merge`. This is how the DMRG-like sweep differentiates the whole
        network with respect to one bond tensor (Sec. III C).
        """
        if not 0 <= k < self.n_sites - 1:
            raise ShapeError(f"substitute_pair: bond {k} out of range for {self.n_sites} sites")
        expected = (self.cores[k].shape[0], self.out_shape[k], self.in_shape[k], self.out_shape[k + 1],
                    self.in_shape[k + 1], self.cores[k + 1].shape[-1])
        if tuple(theta.shape) != expected:
            raise ShapeError(f"substitute_pair: bond tensor shape {tuple(theta.shape)}, expected {expected}")
        self._pair = (k, theta)
        try:
            yield
        finally:
            self._pair = None

    def _forward_cores(self) -> list[torch.Tensor]:
        cores = list(self.cores)
        if self._pair is None:
            return cores
        k, theta = self._pair
        dl, o1, i1, o2, i2, dr = theta.shape
        fused = theta.permute(0, 1, 3, 2, 4, 5).reshape(dl, o1 * o2, i1 * i2, dr)  # one site, legs grouped
        return cores[:k] + [fused] + cores[k + 2:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (*, in_features)`` -> ``(*, out_features)``."""
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ShapeError(f"MPOLinear: expected input (*, {self.in_features}), got {tuple(x.shape)}")
        lead = x.shape[:-1]
        y, self.last_plan = _apply_mpo(x.reshape(-1, self.in_features), self._forward_cores(), self.bias)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, in_shape={self.in_shape}, "
                f"out_shape={self.out_shape}, bond_dims={self.bond_dims}, bias={self.bias is not None}")


# --------------------------------------------------------------------------- networks
ACTIVATIONS = ("relu", "sigmoid", "tanh", "linear", "softmax")


class Activation(nn.Module):
    """Activation by name: ``relu``, ``sigmoid``, ``tanh``, ``linear`` (or ``None``/``"none"``),
    ``softmax`` (over the last axis)."""

    def __init__(self, name: str | None):
        super().__init__()
        key = "linear" if name is None else str(name).lower()
        key = "linear" if key in ("none", "identity") else key
        if key not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)} or None")
        self.name = key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.name == "relu":
            return F.relu(x)
        if self.name == "sigmoid":
            return torch.sigmoid(x)
        if self.name == "tanh":
            return torch.tanh(x)
        if self.name == "softmax":
            return torch.softmax(x, dim=-1)
        return x

    def extra_repr(self) -> str:
        return self.name


def _positive_int(value, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class Dense:
    """A fully connected layer spec (``Dense{Units, trainable}`` of Tables I-IV)."""

    units: int
    trainable: bool = True
    activation: str | None = None
    bias: bool = True

    def __post_init__(self):
        _positive_int(self.units, "Dense.units")
        Activation(self.activation)


@dataclass(frozen=True)
class TNLayer:
    """An MPO layer spec (``TNLayer{Units, N_MPO}``): ``units`` outputs over ``n_mpo`` sites.

    Its input size is the previous layer's output; Tables I-IV put a non-trainable ``Dense`` of
    the same size in front so that a 64-unit, 6-site layer is a 64 -> 64 MPO with site dims 2.
    """

    units: int
    n_mpo: int
    bond_dim: int = 8
    activation: str | None = None
    bias: bool = True

    def __post_init__(self):
        _positive_int(self.units, "TNLayer.units")
        if _positive_int(self.n_mpo, "TNLayer.n_mpo") < 2:
            raise ConfigError(f"TNLayer.n_mpo must be >= 2 (one site is a dense layer), got {self.n_mpo}")
        _positive_int(self.bond_dim, "TNLayer.bond_dim")
        Activation(self.activation)


_LAYER_TYPES = {"dense": Dense, "tn": TNLayer, "tnlayer": TNLayer, "mpo": TNLayer}


def _layer_from_dict(d: Mapping) -> Dense | TNLayer:
    d = dict(d)
    kind = str(d.pop("type", "")).lower()
    if kind not in _LAYER_TYPES:
        raise ConfigError(f"layer spec needs type 'dense' or 'tn', got {kind!r} in {d}")
    cls = _LAYER_TYPES[kind]
    try:
        return cls(**d)
    except TypeError as exc:
        raise ConfigError(f"bad {cls.__name__} spec {d}: {exc}") from None


@dataclass
class TNNConfig:
    """Everything needed to rebuild a :class:`TNNetwork`.

    ``layers`` hold :class:`Dense` / :class:`TNLayer` specs, or dicts with ``type: dense | tn``
    (as read from YAML).
    """

    in_features: int
    layers: list[Dense | TNLayer] = field(default_factory=list)
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self):
        _positive_int(self.in_features, "in_features")
        self.layers = [_layer_from_dict(s) if isinstance(s, Mapping) else s for s in self.layers]
        if not self.layers:
            raise ConfigError("a TNN needs at least one layer")
        for s in self.layers:
            if not isinstance(s, (Dense, TNLayer)):
                raise ConfigError(f"layer specs must be Dense or TNLayer, got {s!r}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")

    def to_dict(self) -> dict:
        layers = [{"type": "dense" if isinstance(s, Dense) else "tn", **asdict(s)} for s in self.layers]
        return {"in_features": self.in_features, "layers": layers, "seed": self.seed, "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping) -> TNNConfig:
        return cls(**d)


@register_model
class TNNetwork(nn.Module):
    """Hybrid network of dense and MPO layers, each followed by its activation (Figs. 5, 6).

    ``forward(x: (*, in_features)) -> (*, units of the last layer)``. Non-trainable dense
    layers (the paper's size-mismatch compensation) have ``requires_grad=False`` parameters.
    Dense weights are drawn like :class:`torch.nn.Linear`'s, from the config's seed.
    """

    def __init__(self, config: TNNConfig, device: torch.device | str | None = None):
        super().__init__()
        self.config = config
        dtype = getattr(torch, config.dtype)
        gen = torch.Generator().manual_seed(config.seed)
        self.layers = nn.ModuleList()
        self.activations = nn.ModuleList()
        width = config.in_features
        for spec in config.layers:
            if isinstance(spec, TNLayer):
                layer = MPOLinear(width, spec.units, n_sites=spec.n_mpo, bond_dim=spec.bond_dim, bias=spec.bias,
                                  dtype=dtype, generator=gen)
            else:
                layer = nn.Linear(width, spec.units, bias=spec.bias, dtype=dtype)
                bound = 1.0 / math.sqrt(width)
                with torch.no_grad():  # nn.Linear's distribution, from our generator
                    layer.weight.copy_((2 * torch.rand(layer.weight.shape, generator=gen, dtype=dtype) - 1) * bound)
                    if layer.bias is not None:
                        layer.bias.copy_((2 * torch.rand(spec.units, generator=gen, dtype=dtype) - 1) * bound)
                layer.requires_grad_(spec.trainable)
            self.layers.append(layer)
            self.activations.append(Activation(spec.activation))
            width = spec.units
        self.to(device)

    @classmethod
    def from_config(cls, config: Mapping) -> TNNetwork:
        """Rebuild from ``config.to_dict()`` (used by :func:`entangle.io.load`)."""
        return cls(TNNConfig.from_dict(config))

    @property
    def in_features(self) -> int:
        return self.config.in_features

    @property
    def out_features(self) -> int:
        return self.config.layers[-1].units

    def mpo_layers(self) -> list[MPOLinear]:
        return [m for m in self.layers if isinstance(m, MPOLinear)]

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ShapeError(f"TNNetwork: expected input (*, {self.in_features}), got {tuple(x.shape)}")
        for layer, act in zip(self.layers, self.activations):
            x = act(layer(x))
        return x


def build_tnn(spec: TNNConfig | Mapping | Sequence[Dense | TNLayer | Mapping], in_features: int | None = None,
              *, seed: int = 0, dtype: str = "float32", device: torch.device | str | None = None) -> TNNetwork:
    """Build a :class:`TNNetwork` from a config, a dict (e.g. from YAML) or a list of layer specs.

    >>> net = build_tnn([Dense(64, trainable=False), TNLayer(64, n_mpo=6, bond_dim=4, activation="relu"),
    ...                  Dense(2, activation="softmax")], in_features=2)
    >>> net(torch.zeros(3, 2)).shape
    torch.Size([3, 2])
    """
    if isinstance(spec, TNNConfig):
        config = spec
    elif isinstance(spec, Mapping):
        config = TNNConfig.from_dict(spec)
    else:
        if in_features is None:
            raise ConfigError("build_tnn: in_features is required when spec is a list of layers")
        config = TNNConfig(in_features=in_features, layers=list(spec), seed=seed, dtype=dtype)
    return TNNetwork(config, device=device)
