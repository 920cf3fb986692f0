"""Atom-centred density coefficients ``A[i, α, n, (l m)]`` and covariant features.

Sommer & Dunham, Sec. II, eqs. (6)–(10): the density of species ``α`` around atom ``i``,

    <αr|σ_i> = Σ_j δ_{α α_j} f_c(r_ji) h(r - r_ji),                              (6)

is expanded on ``R_nl(r) Y_lm(r̂)``:

    A[i, α, n, lm] = ∫ d³r R_nl(r) Y_lm(r̂) <αr|σ_i>.                             (10)

* **Gaussian density** (SOAP, :func:`gaussian_density`): ``h`` a Gaussian of width ``σ``
  expanded in the GTO basis with the analytic radial integral of
  :meth:`~entangle.descriptors.radial.GTOBasis.smeared`; these are DScribe's coefficients.
* **Delta density** (ACE, :func:`delta_density`): ``h = δ``, so
  ``A[i, α, n, lm] = Σ_j δ_{α α_j} f_c(r_ij) R_nl(r_ij) Y_lm(r̂_ij)`` for any radial basis.
* **Covariant features** (Hodapp & Shapeev eq. 38, :func:`covariant_features`):
  ``v[i, lm, μ, β, γ] = Σ_j Y_lm(r̂_ij) Q_μ(r_ij) z^i_β z^j_γ = δ_{β s_i} A[i, γ, μ, lm]``.

Layout: ``(l m)`` is packed as ``l*l + l + m`` (the order of
:func:`entangle.so3.real_spherical_harmonics`), so ``A`` has shape
``(n_atoms, n_species, n_max, (l_max + 1)**2)``.

Neighbours come *padded by centre and species* (:class:`PaddedNeighbours`): row ``(i, α)``
holds the neighbours of atom ``i`` that have species ``α`` in ``K`` slots; unused slots (and,
for SOAP, the slot of the atom itself) hold the zero vector. Per-slot weights
``w[i, α, k] = f_c(r_ij)`` (0 on unused slots) carry cutoff and padding, so the species sum
of eq. (6) is the row structure and the sum over neighbours a batched matrix product per ``l``:
every step is vectorised and differentiable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from entangle.data import Neighbours, pair_vectors
from entangle.descriptors.radial import GTOBasis
from entangle.errors import ShapeError
from entangle.so3 import real_spherical_harmonics
from entangle.so3.harmonics import block_to_standard, solid_harmonic_blocks

CHUNK_SLOTS = 16384
"""Neighbour slots processed together: keeps temporaries at a few MB (in cache, and below the
size at which the C allocator maps fresh pages from the OS for every tensor)."""

__all__ = [
    "PaddedNeighbours",
    "pad_neighbours",
    "safe_distances",
    "gaussian_density",
    "delta_density",
    "covariant_features",
]


@dataclass(frozen=True, eq=False)
class PaddedNeighbours:
    """A neighbour list laid out as ``(n_atoms, n_species, K)`` slots.

    Attributes
    ----------
    pairs : Neighbours
        The ``P`` pairs (in the order they were given).
    slots : torch.Tensor
        ``(P,)`` int64 flat slot ``(i * n_species + α) * K + k`` of each pair: slot ``k`` of
        row ``(i, α)``. The other slots hold the zero vector.
    real : torch.Tensor
        ``(n_atoms, n_species, K)`` bool, True where the slot holds an actual neighbour.
    center : torch.Tensor
        ``(n_atoms, n_species, K)`` bool, True on the slot reserved for the atom itself
        (slot 0 of row ``(i, α_i)``) when built with ``include_center``; else all False.
    counts : torch.Tensor
        ``(n_atoms, n_species)`` int64 number of occupied slots of each row; they are the first
        ones (slot 0 for the centre, then the neighbours), the rest is padding.
    n_atoms, n_species, width : int
        Sizes; ``width`` is ``K``.
    """

    pairs: Neighbours
    slots: torch.Tensor
    real: torch.Tensor
    center: torch.Tensor
    counts: torch.Tensor
    n_atoms: int
    n_species: int
    width: int

    @property
    def occupied(self) -> torch.Tensor:
        """``(N, S, K)`` bool: real neighbours and the centre slot (weight 1 without cutoff)."""
        return self.real | self.center

    def vectors(self, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Differentiable pair vectors ``r_ij = x_j - x_i + S · cell``: (N, S, K, 3), Å.

        Unused and centre slots give exactly zero.
        """
        vectors = pair_vectors(positions, cell, self.pairs)  # [P, 3]
        padded = vectors.new_zeros(self.n_atoms * self.n_species * self.width, 3)
        return padded.index_copy(0, self.slots, vectors).view(
            self.n_atoms, self.n_species, self.width, 3)

    def weights(self, cutoff: torch.Tensor | None = None,
                center_weight: float = 1.0) -> torch.Tensor:
        """Per-slot weights ``w[i, α, k]`` of eq. (6), shape (N, S, K).

        ``f_c(r_ij)`` (1 without ``cutoff``) on real neighbours, ``center_weight`` on the
        centre slot, 0 on padding.

        Parameters
        ----------
        cutoff : (N, S, K) optional cutoff-function values (only read on real slots).
        center_weight : weight of the atom's own Gaussian (SOAP: ``f_c(0)``).
        """
        dtype = torch.float64 if cutoff is None else cutoff.dtype
        center = self.center.to(dtype) * center_weight  # [N, S, K]
        if cutoff is None:
            return self.real.to(dtype) + center
        return torch.where(self.real, cutoff, center)


def pad_neighbours(neighbours: Neighbours, atom_structure: torch.Tensor, species: torch.Tensor,
                   n_species: int, include_center: bool = False) -> PaddedNeighbours:
    """Lay out ``neighbours`` by centre and neighbour species (integer work only).

    Parameters
    ----------
    neighbours : Neighbours
        Pairs from :func:`entangle.data.neighbour_list` (any order).
    atom_structure : (N,) int64
        Structure index of every atom of the batch (``AtomsBatch.batch``).
    species : (N,) int64
        Species index (``0 .. n_species - 1``) of every atom.
    n_species : int
    include_center : bool
        Reserve slot 0 of row ``(i, α_i)`` for atom ``i`` itself.
    """
    n_atoms = int(atom_structure.shape[0])
    if species.shape != atom_structure.shape:
        raise ShapeError(f"species {tuple(species.shape)} and atom_structure "
                         f"{tuple(atom_structure.shape)} must have the same shape")
    device = atom_structure.device
    n_pairs = len(neighbours)
    n_rows = n_atoms * n_species
    row = neighbours.centers * n_species + species.index_select(0, neighbours.neighbors)  # [P]
    counts = torch.bincount(row, minlength=n_rows)  # [N*S]
    atoms = torch.arange(n_atoms, device=device)
    own_row = atoms * n_species + species  # [N]
    first = torch.zeros(n_rows, dtype=torch.int64, device=device)  # first free slot per row
    if include_center:
        first[own_row] = 1
    width = max(int((counts + first).max()) if n_rows else 0, 1)
    # stable order by row (int32 sorts about twice as fast), then slot = rank within the row
    order = torch.argsort(row.to(torch.int32) if n_rows < 2**31 else row, stable=True)  # [P]
    sorted_row = row.index_select(0, order)  # [P]
    offset = first - (torch.cumsum(counts, 0) - counts)  # [N*S] first slot - first rank
    flat = sorted_row * width + offset.index_select(0, sorted_row) \
        + torch.arange(n_pairs, device=device)  # [P] slot of the pair order[p]
    slots = torch.empty_like(flat).index_copy_(0, order, flat)  # [P] slot of pair p
    real = torch.zeros(n_rows * width, dtype=torch.bool, device=device)
    real[slots] = True
    center = torch.zeros(n_rows * width, dtype=torch.bool, device=device)
    if include_center:
        center[own_row * width] = True
    shape = (n_atoms, n_species, width)
    return PaddedNeighbours(pairs=neighbours, slots=slots, real=real.view(shape),
                            center=center.view(shape),
                            counts=(counts + first).view(n_atoms, n_species), n_atoms=n_atoms,
                            n_species=n_species, width=width)


def safe_distances(vectors: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``|r_ij|`` on real slots and 1 elsewhere (no infinite gradient at zero vectors)."""
    d2 = (vectors * vectors).sum(dim=-1)  # [...]
    return torch.sqrt(torch.where(real, d2, torch.ones_like(d2)))  # [...]


def _contract(radial: list[torch.Tensor], harmonics: torch.Tensor,
              l_max: int) -> list[torch.Tensor]:
    """``C_l[g, n, m] = Σ_k radial_l[g, k, n] harmonics[g, k, l² + m]`` for rows ``g``.

    radial : list of ``l_max + 1`` tensors (G, K, n) (or a single one shared by every l).
    harmonics : (G, K, (l_max + 1)**2).
    Returns a list of ``l_max + 1`` tensors (G, n, 2l + 1).

    The blocks are kept apart (split, not sliced) so that the backward pass never has to
    scatter a slice into a zero-filled full-size gradient.
    """
    blocks = torch.split(harmonics, [2 * l + 1 for l in range(l_max + 1)], dim=-1)
    if len(radial) == 1:
        radial = radial * (l_max + 1)
    return [torch.bmm(y.transpose(1, 2), r).transpose(1, 2)  # [G, n, 2l+1]
            for r, y in zip(radial, blocks)]


def _by_chunks(rows: torch.Tensor, weights: torch.Tensor, counts: torch.Tensor | None,
               compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               components_first: bool = False) -> torch.Tensor:
    """Apply ``compute(rows, weights) -> (g, ...)`` to chunks of rows and reassemble.

    rows : (G, K, 3), or (3, G, K) if ``components_first`` (chunks are then (3, g, k));
    weights : (G, K); counts : (G,) occupied (leading) slots per row or None.
    With ``counts`` the rows are visited in order of increasing count and each chunk is cut to
    its own largest count, so little work is spent on padding; the result is put back in the
    original row order (without autograd each chunk is written straight to its rows).
    Chunks hold about :data:`CHUNK_SLOTS` slots.
    """
    n_rows, width = weights.shape
    order = None if counts is None else torch.argsort(counts, stable=True)  # [G]
    step = max(1, CHUNK_SLOTS // max(width, 1))
    graph = torch.is_grad_enabled() and (rows.requires_grad or weights.requires_grad)
    outputs, out = [], None
    for start in range(0, n_rows, step):
        if order is None:
            index = slice(start, start + step)
            used = width
        else:
            index = order[start:start + step]
            used = max(int(counts[index[-1]]), 1)  # the largest count of the chunk
        chunk = compute(rows[:, index, :used] if components_first else rows[index, :used],
                        weights[index, :used])  # [g, ...]
        if graph:
            outputs.append(chunk)
            continue
        if out is None:  # without autograd each chunk goes straight to its rows
            out = chunk.new_empty((n_rows,) + chunk.shape[1:])  # [G, ...]
        out[index] = chunk
    if not graph:
        return out
    out = torch.cat(outputs, dim=0)  # [G, ...] in visiting order
    if order is None:
        return out
    return out[torch.argsort(order)]  # back to the original row order


def _check_slots(vectors: torch.Tensor, weights: torch.Tensor) -> None:
    if vectors.dim() != 4 or vectors.shape[-1] != 3:
        raise ShapeError(f"vectors must have shape (N, S, K, 3), got {tuple(vectors.shape)}")
    if weights.shape != vectors.shape[:3]:
        raise ShapeError(f"weights must have shape (N, S, K) = {tuple(vectors.shape[:3])}, "
                         f"got {tuple(weights.shape)}")


def gaussian_density(vectors: torch.Tensor, weights: torch.Tensor, basis: GTOBasis,
                     sigma: float, counts: torch.Tensor | None = None) -> torch.Tensor:
    """SOAP coefficients of Gaussian-smeared neighbours in the GTO basis (DScribe's ``c_nlm``).

    ``A[i, α, n, lm] = Σ_k w[i, α, k] I_nl(r_k) r_k^l Y_lm(r̂_k)`` over the slots ``k`` of row
    ``(i, α)``, with the analytic radial integral ``I_nl(d) = Σ_n' K[l, n, n'] exp(-γ[l, n'] d²)``
    of :meth:`GTOBasis.smeared`. The sum runs on the primitives ``exp(-γ d²) r^l Y_lm`` (solid
    harmonics: no square root, smooth everywhere, also at the zero vector of the central atom)
    and ``K`` is applied once per atom.

    Rows are processed in chunks, by :func:`_gaussian_rows` without autograd (nothing requires
    a gradient, or grad mode is off) and by :func:`_gaussian_rows_graph` with it; both give
    the same values to rounding.

    Parameters
    ----------
    vectors : (N, S, K, 3) pair vectors in Å (differentiable), e.g.
        :meth:`PaddedNeighbours.vectors`.
    weights : (N, S, K) slot weights (:meth:`PaddedNeighbours.weights`), or a bool mask of
        the slots with weight 1 (the others 0; saves a multiplication).
    basis : the GTO basis (its ``n_max``, ``l_max`` set the output size).
    sigma : Gaussian width, Å.
    counts : (N, S) optional number of occupied leading slots per row
        (:attr:`PaddedNeighbours.counts`); lets the work skip most of the padding.

    Returns
    -------
    A : (N, S, n_max, (l_max + 1)**2) tensor, dtype of ``vectors``.
    """
    _check_slots(vectors, weights)
    n_atoms, n_species, width, _ = vectors.shape
    l_max = basis.l_max
    k, gamma = basis.smeared_constants(sigma)
    k, gamma = k.to(vectors.dtype), gamma.to(vectors.dtype)  # [L, n, n'], [L, n']
    graph = torch.is_grad_enabled() and (vectors.requires_grad or weights.requires_grad)
    rows_of = _gaussian_rows_graph if graph else _gaussian_rows
    rate = gamma / math.log(2.0)  # [L, n']: exp(-γ d²) = 2^(-rate d²); exp2 is the faster one
    k_transposed = k.transpose(1, 2).contiguous()  # [L, n', n]
    standard = block_to_standard(l_max, vectors.device)

    def compute(rows: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return rows_of(rows, w, rate, k_transposed, standard)  # [g, n, lm]

    rows = vectors.reshape(n_atoms * n_species, width, 3)  # [G, K, 3]
    out = _by_chunks(rows if graph else rows.permute(2, 0, 1),  # no grad: [3, G, K]
                     weights.reshape(n_atoms * n_species, width),
                     None if counts is None else counts.reshape(-1), compute,
                     components_first=not graph)  # [G, n, lm]
    return out.view(n_atoms, n_species, basis.n_max, (l_max + 1) ** 2)


def _gaussian_rows(rows: torch.Tensor, weights: torch.Tensor, rate: torch.Tensor,
                   k_transposed: torch.Tensor, standard: torch.Tensor) -> torch.Tensor:
    """No-grad kernel of :func:`gaussian_density` for rows ``g``: (G, n_max, (l_max + 1)**2).

    rows : (3, G, K) vectors, Å (components first); weights : (G, K) float or bool;
    rate : (L, n') ``γ / ln 2``, Å⁻², and k_transposed : (L, n', n) ``K[l]^T``, from
    :meth:`GTOBasis.smeared_constants`;
    standard : :func:`~entangle.so3.harmonics.block_to_standard` of ``l_max``.

    One ``l`` at a time (so that a chunk's temporaries stay in cache): the solid harmonics
    ``Y_l[m, g, k]`` (components first, in the block order ``m = 0, 1..l, -1..-l`` of
    :func:`~entangle.so3.harmonics.solid_harmonic_blocks`), the primitives
    ``P_l[g, n', k] = w 2^(-rate[l, n'] d²)``, one ``bmm`` ``Y_l[g] P_l[g]^T`` (G, 2l+1, n') and
    one product with ``K[l]^T``; the blocks are then put in the order ``l*l + l + m``. A bool
    mask moves the empty slots to the origin, where every solid harmonic but ``Y_00``
    vanishes, and zeroes ``Y_00`` there: no multiplication by the weights, and no ``exp(-∞)``
    (several times slower than a finite exponential).
    """
    _, n_rows, width = rows.shape
    mask = weights.dtype == torch.bool
    if mask:
        rows = torch.where(weights, rows, 0.0)  # [3, G, K]
    else:
        scale = weights.to(rows.dtype).unsqueeze(1)  # [G, 1, K]
    x, y, z = rows.reshape(3, 1, n_rows, width)
    d2 = (x * x + y * y + z * z).view(n_rows, 1, width)  # [G, 1, K]
    # DScribe's GTOs: the first function (a_0 = 1 Å) has the same exponent for every l
    shared = bool((rate[:, 0] == rate[0, 0]).all())
    if shared:
        first = torch.mul(d2, -rate[0, 0]).exp2_()  # [G, 1, K], once for all l
    blocks = []
    for l, solid in enumerate(solid_harmonic_blocks(rows.reshape(3, -1), rate.shape[0] - 1,
                                                    components_first=True)):  # [2l+1, G*K]
        if l == 0 and mask:
            solid = solid.masked_fill(~weights.view(1, -1), 0.0)  # Y_00 of the empty slots
        if shared:
            primitives = d2.new_empty(n_rows, rate.shape[1], width)  # [G, n', K]
            primitives[:, :1] = first
            torch.mul(d2, -rate[l, 1:, None], out=primitives[:, 1:]).exp2_()
        else:
            primitives = torch.mul(d2, -rate[l][:, None]).exp2_()  # [G, n', K]
        if not mask:
            primitives *= scale  # [G, n', K]
        summed = torch.bmm(solid.view(2 * l + 1, n_rows, width).transpose(0, 1),
                           primitives.transpose(1, 2))  # [G, 2l+1, n']
        blocks.append(torch.matmul(summed, k_transposed[l]))  # [G, 2l+1, n]
    out = torch.cat(blocks, dim=1)  # [G, lm, n], lm in block order
    return out.transpose(1, 2).index_select(2, standard)  # [G, n, lm]


def _gaussian_rows_graph(rows: torch.Tensor, weights: torch.Tensor, rate: torch.Tensor,
                         k_transposed: torch.Tensor, standard: torch.Tensor) -> torch.Tensor:
    """Autograd kernel of :func:`gaussian_density`: (G, n_max, (l_max + 1)**2).

    Same arguments and result as :func:`_gaussian_rows` (``standard`` is not needed: the
    harmonics come in the order ``l*l + l + m``), with the harmonics' components last and
    primitives ``(G, K, n')``, so that the backward pass reads unit-stride arrays.
    """
    l_max = rate.shape[0] - 1
    d2 = (rows * rows).sum(dim=-1)  # [G, K]
    scale = None
    if weights.dtype == torch.bool:  # 2^(-r·∞) = 0 on empty slots, without a multiplication
        d2 = torch.where(weights, d2, torch.full_like(d2, math.inf))  # [G, K]
    else:
        scale = weights.to(rows.dtype).unsqueeze(-1)  # [G, K, 1]
    d2 = d2.unsqueeze(-1)  # [G, K, 1]
    solid = real_spherical_harmonics(rows, l_max, normalize=False)  # [G, K, (l_max+1)^2]
    harmonics = torch.split(solid, [2 * l + 1 for l in range(l_max + 1)], dim=-1)
    blocks = []
    for l, y in enumerate(harmonics):
        primitives = torch.exp2(-rate[l] * d2)  # [G, K, n']
        if scale is not None:
            primitives = primitives * scale  # [G, K, n']
        summed = torch.bmm(y.transpose(1, 2), primitives)  # [G, 2l+1, n']
        blocks.append(torch.matmul(summed, k_transposed[l]).transpose(1, 2))  # [G, n, 2l+1]
    return torch.cat(blocks, dim=-1)  # [G, n, lm]


def delta_density(vectors: torch.Tensor, weights: torch.Tensor, real: torch.Tensor,
                  radial: torch.nn.Module, l_max: int,
                  counts: torch.Tensor | None = None) -> torch.Tensor:
    """ACE atomic base ``A[i, α, n, lm] = Σ_k w[i, α, k] R_nl(r_k) Y_lm(r̂_k)``.

    Parameters
    ----------
    vectors : (N, S, K, 3) pair vectors in Å (differentiable).
    weights : (N, S, K) slot weights (``f_c(r)`` on real neighbours, 0 elsewhere).
    real : (N, S, K) bool, True for real neighbours (their vectors must be non-zero).
    radial : a basis of :mod:`entangle.descriptors.radial`: maps (M,) -> (M, L, n_max), has
        the attribute ``l_dependent`` (False: the same functions for every l).
    l_max : largest ``l`` of the harmonics (at most the basis' ``l_max`` if l-dependent).
    counts : (N, S) optional number of occupied leading slots per row
        (:attr:`PaddedNeighbours.counts`); lets the work skip most of the padding.

    Returns
    -------
    A : (N, S, n_max, (l_max + 1)**2) tensor.
    """
    _check_slots(vectors, weights)
    n_atoms, n_species, width, _ = vectors.shape
    n_l = 1 if not getattr(radial, "l_dependent", True) else l_max + 1

    def compute(rows: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        real_rows = w != 0  # [g, k]
        safe = torch.where(real_rows.unsqueeze(-1), rows, torch.ones_like(rows))  # [g, k, 3]
        distances = safe_distances(rows, real_rows)  # [g, k]
        values = radial(distances.reshape(-1))  # [g*k, L, n]
        if values.shape[1] < n_l:
            raise ShapeError(f"the radial basis has l_max={values.shape[1] - 1} < "
                             f"l_max={l_max}")
        values = values[:, :n_l] * w.reshape(-1, 1, 1).to(values.dtype)  # [g*k, L', n]
        values = values.reshape(rows.shape[0], rows.shape[1], n_l, values.shape[-1])
        harmonics = real_spherical_harmonics(safe, l_max)  # [g, k, lm]
        return torch.cat(_contract(list(values.unbind(2)), harmonics, l_max), dim=-1)

    weights = torch.where(real, weights.to(vectors.dtype), torch.zeros_like(vectors[..., 0]))
    out = _by_chunks(vectors.reshape(n_atoms * n_species, width, 3),
                     weights.reshape(n_atoms * n_species, width),
                     None if counts is None else counts.reshape(-1), compute)  # [G, n, lm]
    return out.view(n_atoms, n_species, out.shape[1], (l_max + 1) ** 2)


def covariant_features(density: torch.Tensor, center_species: torch.Tensor) -> torch.Tensor:
    """Hodapp & Shapeev eq. (38) covariant feature vectors from delta-density coefficients.

    ``v[i, lm, μ, β, γ] = Σ_j Y_lm(r̂_ij) Q_μ(r_ij) z^i_β z^j_γ = δ_{β, s_i} A[i, γ, μ, lm]``,
    where ``z`` are one-hot species vectors (their eq. 36). The channel index ``n`` of
    eq. (38) is the multi-index ``(μ, β, γ)``: flatten the last three axes (row-major).

    Parameters
    ----------
    density : (N, S, n_radial, (l_max + 1)**2) coefficients from :func:`delta_density`.
    center_species : (N,) int64 species index of each central atom.

    Returns
    -------
    v : (N, (l_max + 1)**2, n_radial, S, S) tensor, axes ``[i, lm, μ, β, γ]``.
    """
    if density.dim() != 4 or center_species.shape != density.shape[:1]:
        raise ShapeError(f"density must be (N, S, n, (l_max+1)^2) and center_species (N,), got "
                         f"{tuple(density.shape)} and {tuple(center_species.shape)}")
    one_hot = torch.nn.functional.one_hot(center_species, density.shape[1]).to(density.dtype)
    return torch.einsum("ib,igul->ilubg", one_hot, density)  # [N, lm, μ, β, γ]
