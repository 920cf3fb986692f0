"""Neighbour lists (computed with vesin) and differentiable pair vectors.

A pair ``(i, j, S)`` means atom ``j`` translated by the integer cell shift ``S`` lies within
the cutoff of atom ``i``:

    r_ij = x_j - x_i + S · cell,        |r_ij| < cutoff,

where ``cell`` holds the lattice vectors as rows (ASE convention), so ``S · cell`` is
``S[0] a + S[1] b + S[2] c``. Lists are *full* (both ``i→j`` and ``j→i``), include an atom's
own periodic images when the cell is smaller than the cutoff, and never contain ``(i, i, 0)``.
Along non-periodic directions the shift is always 0 and the cell vector may be zero.

The integer shifts are kept instead of the vectors so that :func:`pair_vectors` recomputes
``r_ij`` from positions and cell inside the autograd graph: forces are ``-dE/dx`` and the
stress follows from the derivative with respect to a strain applied to positions *and* cell.

>>> import numpy as np
>>> from entangle.data import Structure, neighbour_list
>>> s = Structure(positions=np.zeros((1, 3)), numbers=np.array([29]),
...               cell=2.5 * np.eye(3), pbc=True)
>>> int(neighbour_list([s], cutoff=3.0).centers.numel())   # 6 nearest images at 2.5 Å
6
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import vesin

from entangle.errors import ConfigError, ShapeError

if TYPE_CHECKING:
    from entangle.data.atoms import AtomsBatch, Structure

__all__ = ["Neighbours", "neighbour_list", "pair_vectors", "pairs_within"]


@dataclass(frozen=True, eq=False)
class Neighbours:
    """Pairs of atoms within a cutoff, for a batch of structures.

    Atom indices are global (into the concatenated atoms of the batch). Pairs are sorted by
    ``(centers, neighbors, shifts)``, unless made by ``neighbour_list(..., sort=False)``.

    Attributes
    ----------
    centers : torch.Tensor
        ``(P,)`` int64, index ``i`` of the central atom.
    neighbors : torch.Tensor
        ``(P,)`` int64, index ``j`` of the neighbouring atom.
    shifts : torch.Tensor
        ``(P, 3)`` int64 cell shift ``S`` (in units of lattice vectors) applied to atom ``j``.
    structure : torch.Tensor
        ``(P,)`` int64 index of the structure that the pair belongs to.
    cutoff : float
        Cutoff radius in Å.
    """

    centers: torch.Tensor
    neighbors: torch.Tensor
    shifts: torch.Tensor
    structure: torch.Tensor
    cutoff: float

    def __len__(self) -> int:
        return int(self.centers.shape[0])


def pairs_within(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray,
                 cutoff: float, sort: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``(i, j, S)`` of one structure with ``|x_j - x_i + S·cell| < cutoff``.

    The inputs are assumed valid (as checked by :class:`~entangle.data.Structure`): a cell
    whose periodic vectors are linearly independent.

    Parameters
    ----------
    positions : np.ndarray
        ``(n, 3)`` float64 Cartesian positions in Å.
    cell : np.ndarray
        ``(3, 3)`` lattice vectors as rows, Å.
    pbc : np.ndarray
        ``(3,)`` bool periodicity along each lattice vector.
    cutoff : float
        Cutoff radius in Å.
    sort : bool
        Sort the pairs by ``(i, j, S)`` (default). If False they come in an unspecified but
        deterministic order (vesin's half list, then its mirror image) and the sort (one
        argsort of ``P`` keys) is skipped.

    Returns
    -------
    i, j : np.ndarray
        ``(P,)`` int64 atom indices, sorted by ``(i, j, S)`` if ``sort``.
    shifts : np.ndarray
        ``(P, 3)`` int64 cell shifts.
    """
    # vesin's half list (each pair once) is about a third faster to make than its full list;
    # the full list is the half one and its mirror image (j, i, -S)
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=False)
    i, j, shifts = calculator.compute(points=np.ascontiguousarray(positions, dtype=np.float64),
                                      box=np.ascontiguousarray(cell, dtype=np.float64),
                                      periodic=[bool(p) for p in pbc], quantities="ijS")
    i, j = (a.view(np.int64) if a.dtype == np.uint64 else a.astype(np.int64)  # no copy
            for a in (np.asarray(i), np.asarray(j)))  # indices < 2**63: same bits
    shifts = np.asarray(shifts, dtype=np.int64).reshape(-1, 3)
    i, j, shifts = (np.concatenate([i, j]), np.concatenate([j, i]),
                    np.concatenate([shifts, -shifts]))
    if not sort or i.size == 0:
        return i, j, shifts
    # one argsort of a single key instead of a lexsort on five: the mixed-radix number
    # (i, j, S0, S1, S2) (each shift offset to start at 0) orders exactly like the tuple
    low = shifts.min(axis=0)
    span = shifts.max(axis=0) - low + 1  # [3]
    n = positions.shape[0]
    if float(n) * n * float(np.prod(span)) < 2.0**62:
        key = i * n + j
        for axis in range(3):
            key = key * span[axis] + (shifts[:, axis] - low[axis])
        order = np.argsort(key, kind="stable")
    else:  # the key would overflow int64
        order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], j, i))
    return i[order], j[order], shifts[order]


def neighbour_list(systems: AtomsBatch | Structure | Sequence[Structure], cutoff: float, *,
                   device: torch.device | str | None = None, sort: bool = True) -> Neighbours:
    """Full neighbour list of a batch of structures.

    Parameters
    ----------
    systems : AtomsBatch, Structure or sequence of Structure (e.g. a Dataset)
        The structures; atom indices of a sequence are numbered in order, as in
        :meth:`AtomsBatch.from_structures`.
    cutoff : float
        Cutoff radius in Å (> 0).
    device : torch.device or str, optional
        Device of the returned tensors (default: the batch's device, or CPU).
    sort : bool
        Sort the pairs of each structure by ``(centers, neighbors, shifts)`` (default); False
        keeps an unspecified but deterministic order, for callers that group the pairs
        themselves.

    Returns
    -------
    Neighbours
        ``P`` pairs with global atom indices.

    Raises
    ------
    ConfigError
        If the cutoff is not a positive finite number.
    """
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float, np.floating, np.integer)) \
            or not np.isfinite(cutoff) or cutoff <= 0:
        raise ConfigError(f"cutoff must be a positive finite number of Å, got {cutoff!r}")
    frames = _frames(systems)
    if device is None:
        device = systems.positions.device if hasattr(systems, "ptr") else torch.device("cpu")
    centers, neighbors, shifts, structure = [], [], [], []
    offset = 0
    for k, (positions, cell, pbc) in enumerate(frames):
        i, j, s = pairs_within(positions, cell, pbc, cutoff, sort=sort)
        centers.append(i + offset)
        neighbors.append(j + offset)
        shifts.append(s)
        structure.append(np.full(i.shape, k, dtype=np.int64))
        offset += positions.shape[0]

    def cat(parts: list[np.ndarray], shape: tuple[int, ...]) -> torch.Tensor:
        if len(parts) == 1:
            array = parts[0]
        else:
            array = np.concatenate(parts) if parts else np.zeros(shape, dtype=np.int64)
        return torch.as_tensor(array, dtype=torch.int64, device=device)

    return Neighbours(centers=cat(centers, (0,)), neighbors=cat(neighbors, (0,)),
                      shifts=cat(shifts, (0, 3)), structure=cat(structure, (0,)),
                      cutoff=float(cutoff))


def _frames(systems: AtomsBatch | Structure | Sequence[Structure]
            ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(positions, cell, pbc) numpy triples of each structure."""
    if hasattr(systems, "ptr"):  # an AtomsBatch
        positions = systems.positions.detach().cpu().double().numpy()
        cells = systems.cell.detach().cpu().double().numpy()
        pbcs = systems.pbc.detach().cpu().numpy()
        ptr = systems.ptr.detach().cpu().numpy()
        return [(positions[ptr[k]:ptr[k + 1]], cells[k], pbcs[k]) for k in range(len(cells))]
    if hasattr(systems, "numbers"):  # a single Structure
        systems = [systems]
    return [(s.positions, s.cell, s.pbc) for s in systems]


def pair_vectors(positions: torch.Tensor, cell: torch.Tensor,
                 neighbours: Neighbours) -> torch.Tensor:
    """Differentiable pair vectors ``r_ij = x_j - x_i + S · cell``.

    Parameters
    ----------
    positions : torch.Tensor
        ``(N, 3)`` Cartesian positions in Å (all structures of the batch, concatenated).
    cell : torch.Tensor
        ``(B, 3, 3)`` lattice vectors as rows, Å; a single ``(3, 3)`` cell is accepted when
        every pair belongs to structure 0.
    neighbours : Neighbours
        Pairs from :func:`neighbour_list` on the same batch.

    Returns
    -------
    torch.Tensor
        ``(P, 3)`` vectors from atom ``i`` to the image of atom ``j``, in Å.

    Raises
    ------
    ShapeError
        If ``positions`` or ``cell`` do not have the shapes above.
    """
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ShapeError(f"positions must have shape (N, 3), got {tuple(positions.shape)}")
    if cell.dim() == 2:
        cell = cell.unsqueeze(0)
    if cell.dim() != 3 or cell.shape[1:] != (3, 3):
        raise ShapeError(f"cell must have shape (B, 3, 3) or (3, 3), got {tuple(cell.shape)}")
    shifts = neighbours.shifts.to(dtype=positions.dtype)  # [P, 3]
    vectors = positions.index_select(0, neighbours.neighbors) \
        - positions.index_select(0, neighbours.centers)  # [P, 3]
    if cell.shape[0] == 1:  # one structure: a single (P, 3) x (3, 3) product
        return torch.addmm(vectors, shifts, cell[0])  # [P, 3]
    for k in range(3):  # + S[k] * (lattice vector k of the pair's structure)
        lattice = cell[:, k].index_select(0, neighbours.structure)  # [P, 3]
        vectors = torch.addcmul(vectors, shifts[:, k:k + 1], lattice)  # [P, 3]
    return vectors  # [P, 3]
